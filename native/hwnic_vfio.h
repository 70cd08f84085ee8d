/*
 * hwnic_vfio.h - the C functions of the hwnic._vfio shim.
 *
 * This file is read twice: by the C compiler (through hwnic_vfio.c) and by
 * cffi's cdef parser (build_vfio.py), so it holds plain prototypes only: no
 * #include, no macros, no inline bodies.
 *
 * Conventions: every function that can fail returns 0 (or a non-negative
 * result such as a file descriptor) on success and -errno on failure, so the
 * Python side never has to read the thread's errno after the call.
 */

/* --- container (/dev/vfio/vfio) --- */
int hv_get_api_version(int container_fd);
int hv_check_extension(int container_fd, int extension);
int hv_set_iommu(int container_fd, int iommu_type);
int hv_iommu_get_info(int container_fd, uint64_t *pgsizes,
                      uint64_t *range_starts, uint64_t *range_ends,
                      uint32_t max_ranges, uint32_t *num_ranges);
int hv_map_dma(int container_fd, uint64_t vaddr, uint64_t iova, uint64_t size,
               uint32_t flags);
int hv_unmap_dma(int container_fd, uint64_t iova, uint64_t size,
                 uint64_t *unmapped);

/* --- group (/dev/vfio/N) --- */
int hv_group_get_status(int group_fd, uint32_t *flags);
int hv_group_set_container(int group_fd, int container_fd);
int hv_group_unset_container(int group_fd);
int hv_group_get_device_fd(int group_fd, const char *device_name);

/* --- device --- */
int hv_device_get_info(int device_fd, uint32_t *flags, uint32_t *num_regions,
                       uint32_t *num_irqs);
int hv_device_get_region_info(int device_fd, uint32_t index, uint32_t *flags,
                              uint64_t *size, uint64_t *offset);
int hv_device_get_irq_info(int device_fd, uint32_t index, uint32_t *flags,
                           uint32_t *count);
int hv_device_set_irq_eventfds(int device_fd, uint32_t index, uint32_t start,
                               uint32_t count, const int32_t *eventfds);
int hv_device_disable_irq(int device_fd, uint32_t index);
int hv_device_irq_action(int device_fd, uint32_t index, uint32_t start,
                         uint32_t count, uint32_t action);
int hv_device_unmask_intx(int device_fd);
int hv_device_mask_intx(int device_fd);
int hv_device_reset(int device_fd);

/* --- memory: device regions and DMA buffers --- */
int hv_mmap_region(int device_fd, uint64_t offset, uint64_t size, int writable,
                   void **out);
int hv_dma_alloc(uint64_t size, int hugetlb, void **out);
int hv_munmap(void *addr, uint64_t size);

/* --- MMIO: exactly one volatile access of the named width each --- */
uint8_t  mmio_read8(void *base, uint64_t offset);
uint16_t mmio_read16(void *base, uint64_t offset);
uint32_t mmio_read32(void *base, uint64_t offset);
uint64_t mmio_read64(void *base, uint64_t offset);
void mmio_write8(void *base, uint64_t offset, uint8_t value);
void mmio_write16(void *base, uint64_t offset, uint16_t value);
void mmio_write32(void *base, uint64_t offset, uint32_t value);
void mmio_write64(void *base, uint64_t offset, uint64_t value);

/* --- barriers --- */
void wmb(void);
void rmb(void);
void mb(void);
