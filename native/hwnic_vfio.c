/*
 * hwnic_vfio.c - thin C helpers over <linux/vfio.h> for hwnic._vfio.
 *
 * Each helper does one ioctl (or one mmap, or one MMIO access). Struct
 * layouts and ioctl numbers come from the kernel's own header at build time;
 * Python never packs a VFIO struct by hand. Failures return -errno.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  /* memfd_create, MAP_POPULATE */
#endif
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/vfio.h>
/* The page-size encoding for memfd_create; glibc does not define MFD_HUGE_*. */
#include <asm-generic/hugetlb_encode.h>

#include "hwnic_vfio.h"

/* ioctl() returns -1 and sets errno; turn that into -errno, keep results. */
static int ret_or_errno(int rc)
{
    return rc < 0 ? -errno : rc;
}

/* ------------------------------------------------------------------ */
/* Barriers.                                                           */
/*                                                                     */
/* x86-64: vfio-pci maps BARs uncached (UC-), and UC accesses are      */
/* neither reordered with each other nor with earlier stores to        */
/* ordinary write-back memory (TSO). So a DMA descriptor written to    */
/* RAM is visible to the device before a later doorbell MOV to a BAR,  */
/* with no fence: only the compiler must be kept from reordering.      */
/* That is what Linux's writel()/readl() do on x86. The explicit       */
/* wmb/rmb/mb below are the full fences (as Linux's wmb/rmb/mb), for   */
/* callers that use write-combining or non-temporal stores.            */
/*                                                                     */
/* Elsewhere (arm64 and the rest) device and normal memory accesses    */
/* can be reordered by the CPU, so the accessors carry a real barrier: */
/* a write fence before each MMIO store (so prior DMA-memory stores    */
/* land first) and a read fence after each MMIO load (so later reads   */
/* of DMA memory see what the device wrote before it updated the       */
/* register). arm64 uses DSB, like Linux; other CPUs a full            */
/* __sync_synchronize(), which is stronger than needed but correct.    */
/* ------------------------------------------------------------------ */
#define compiler_barrier() __asm__ __volatile__("" ::: "memory")

#if defined(__x86_64__) || defined(__i386__)
#define HW_WMB() __asm__ __volatile__("sfence" ::: "memory")
#define HW_RMB() __asm__ __volatile__("lfence" ::: "memory")
#define HW_MB()  __asm__ __volatile__("mfence" ::: "memory")
/* Ordering with UC MMIO is architectural: compiler barrier suffices. */
#define MMIO_BEFORE_WRITE() compiler_barrier()
#define MMIO_AFTER_READ()   compiler_barrier()
#elif defined(__aarch64__)
#define HW_WMB() __asm__ __volatile__("dsb st" ::: "memory")
#define HW_RMB() __asm__ __volatile__("dsb ld" ::: "memory")
#define HW_MB()  __asm__ __volatile__("dsb sy" ::: "memory")
#define MMIO_BEFORE_WRITE() HW_WMB()
#define MMIO_AFTER_READ()   HW_RMB()
#else
#define HW_WMB() __sync_synchronize()
#define HW_RMB() __sync_synchronize()
#define HW_MB()  __sync_synchronize()
#define MMIO_BEFORE_WRITE() HW_WMB()
#define MMIO_AFTER_READ()   HW_RMB()
#endif

void wmb(void) { HW_WMB(); }
void rmb(void) { HW_RMB(); }
void mb(void)  { HW_MB(); }

/* ------------------------------------------------------------------ */
/* MMIO accessors: one volatile load or store of exactly that width.   */
/* ------------------------------------------------------------------ */
#define MMIO_PTR(type, base, off) \
    ((volatile type *)((volatile uint8_t *)(base) + (off)))

#define DEFINE_MMIO(bits)                                                   \
    uint##bits##_t mmio_read##bits(void *base, uint64_t offset)             \
    {                                                                       \
        uint##bits##_t v;                                                   \
        compiler_barrier();                                                 \
        v = *MMIO_PTR(uint##bits##_t, base, offset);                        \
        MMIO_AFTER_READ();                                                  \
        return v;                                                           \
    }                                                                       \
    void mmio_write##bits(void *base, uint64_t offset, uint##bits##_t value) \
    {                                                                       \
        MMIO_BEFORE_WRITE();                                                \
        *MMIO_PTR(uint##bits##_t, base, offset) = value;                    \
        compiler_barrier();                                                 \
    }

DEFINE_MMIO(8)
DEFINE_MMIO(16)
DEFINE_MMIO(32)
DEFINE_MMIO(64)

/* ------------------------------------------------------------------ */
/* Container.                                                          */
/* ------------------------------------------------------------------ */
int hv_get_api_version(int container_fd)
{
    return ret_or_errno(ioctl(container_fd, VFIO_GET_API_VERSION));
}

int hv_check_extension(int container_fd, int extension)
{
    return ret_or_errno(ioctl(container_fd, VFIO_CHECK_EXTENSION, extension));
}

int hv_set_iommu(int container_fd, int iommu_type)
{
    return ret_or_errno(ioctl(container_fd, VFIO_SET_IOMMU, iommu_type));
}

/*
 * IOMMU page sizes and the usable IOVA ranges (the IOVA_RANGE capability,
 * which excludes reserved windows such as the x86 MSI range). Copies up to
 * max_ranges ranges; *num_ranges is the total the kernel reported (0 if
 * the kernel is too old to report any).
 */
int hv_iommu_get_info(int container_fd, uint64_t *pgsizes,
                      uint64_t *range_starts, uint64_t *range_ends,
                      uint32_t max_ranges, uint32_t *num_ranges)
{
    struct vfio_iommu_type1_info probe = { .argsz = sizeof(probe) };
    struct vfio_iommu_type1_info *info;
    uint32_t need, off;
    int rc;

    *num_ranges = 0;
    if (ioctl(container_fd, VFIO_IOMMU_GET_INFO, &probe) < 0)
        return -errno;
    *pgsizes = (probe.flags & VFIO_IOMMU_INFO_PGSIZES) ? probe.iova_pgsizes : 0;
    need = probe.argsz;  /* the kernel asks for more room when it has caps */
    if (need <= sizeof(probe))
        return 0;

    info = calloc(1, need);
    if (!info)
        return -ENOMEM;
    info->argsz = need;
    rc = 0;
    if (ioctl(container_fd, VFIO_IOMMU_GET_INFO, info) < 0) {
        rc = -errno;
        goto out;
    }
    if (!(info->flags & VFIO_IOMMU_INFO_CAPS))
        goto out;
    for (off = info->cap_offset; off != 0 && off + sizeof(struct vfio_info_cap_header) <= need;) {
        struct vfio_info_cap_header *hdr =
            (struct vfio_info_cap_header *)((uint8_t *)info + off);
        if (hdr->id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
            struct vfio_iommu_type1_info_cap_iova_range *cap =
                (struct vfio_iommu_type1_info_cap_iova_range *)hdr;
            uint32_t i;
            *num_ranges = cap->nr_iovas;
            for (i = 0; i < cap->nr_iovas && i < max_ranges; i++) {
                range_starts[i] = cap->iova_ranges[i].start;
                range_ends[i] = cap->iova_ranges[i].end;  /* inclusive */
            }
            break;
        }
        off = hdr->next;
    }
out:
    free(info);
    return rc;
}

int hv_map_dma(int container_fd, uint64_t vaddr, uint64_t iova, uint64_t size,
               uint32_t flags)
{
    struct vfio_iommu_type1_dma_map map;

    memset(&map, 0, sizeof(map));
    map.argsz = sizeof(map);
    map.flags = flags;
    map.vaddr = vaddr;
    map.iova = iova;
    map.size = size;
    return ret_or_errno(ioctl(container_fd, VFIO_IOMMU_MAP_DMA, &map));
}

int hv_unmap_dma(int container_fd, uint64_t iova, uint64_t size,
                 uint64_t *unmapped)
{
    struct vfio_iommu_type1_dma_unmap unmap;

    memset(&unmap, 0, sizeof(unmap));
    unmap.argsz = sizeof(unmap);
    unmap.iova = iova;
    unmap.size = size;
    if (ioctl(container_fd, VFIO_IOMMU_UNMAP_DMA, &unmap) < 0)
        return -errno;
    *unmapped = unmap.size;  /* the kernel writes back what it unmapped */
    return 0;
}

/* ------------------------------------------------------------------ */
/* Group.                                                              */
/* ------------------------------------------------------------------ */
int hv_group_get_status(int group_fd, uint32_t *flags)
{
    struct vfio_group_status status = { .argsz = sizeof(status) };

    if (ioctl(group_fd, VFIO_GROUP_GET_STATUS, &status) < 0)
        return -errno;
    *flags = status.flags;
    return 0;
}

int hv_group_set_container(int group_fd, int container_fd)
{
    /* The ioctl takes a pointer to the container's fd, not the fd itself. */
    return ret_or_errno(ioctl(group_fd, VFIO_GROUP_SET_CONTAINER, &container_fd));
}

int hv_group_unset_container(int group_fd)
{
    return ret_or_errno(ioctl(group_fd, VFIO_GROUP_UNSET_CONTAINER));
}

int hv_group_get_device_fd(int group_fd, const char *device_name)
{
    /* Returns the new device fd: the reason fcntl.ioctl cannot do this. */
    return ret_or_errno(ioctl(group_fd, VFIO_GROUP_GET_DEVICE_FD, device_name));
}

/* ------------------------------------------------------------------ */
/* Device.                                                             */
/* ------------------------------------------------------------------ */
int hv_device_get_info(int device_fd, uint32_t *flags, uint32_t *num_regions,
                       uint32_t *num_irqs)
{
    struct vfio_device_info info = { .argsz = sizeof(info) };

    if (ioctl(device_fd, VFIO_DEVICE_GET_INFO, &info) < 0)
        return -errno;
    *flags = info.flags;
    *num_regions = info.num_regions;
    *num_irqs = info.num_irqs;
    return 0;
}

int hv_device_get_region_info(int device_fd, uint32_t index, uint32_t *flags,
                              uint64_t *size, uint64_t *offset)
{
    struct vfio_region_info info = { .argsz = sizeof(info), .index = index };

    if (ioctl(device_fd, VFIO_DEVICE_GET_REGION_INFO, &info) < 0)
        return -errno;
    *flags = info.flags;
    *size = info.size;
    *offset = info.offset;
    return 0;
}

int hv_device_get_irq_info(int device_fd, uint32_t index, uint32_t *flags,
                           uint32_t *count)
{
    struct vfio_irq_info info = { .argsz = sizeof(info), .index = index };

    if (ioctl(device_fd, VFIO_DEVICE_GET_IRQ_INFO, &info) < 0)
        return -errno;
    *flags = info.flags;
    *count = info.count;
    return 0;
}

/* VFIO_DEVICE_SET_IRQS takes a header followed by a variable-length array. */
static int set_irqs(int device_fd, uint32_t flags, uint32_t index,
                    uint32_t start, uint32_t count, const void *data,
                    size_t data_size)
{
    size_t argsz = sizeof(struct vfio_irq_set) + data_size;
    struct vfio_irq_set *set = calloc(1, argsz);
    int rc;

    if (!set)
        return -ENOMEM;
    set->argsz = (uint32_t)argsz;
    set->flags = flags;
    set->index = index;
    set->start = start;
    set->count = count;
    if (data_size)
        memcpy(set->data, data, data_size);
    rc = ret_or_errno(ioctl(device_fd, VFIO_DEVICE_SET_IRQS, set));
    free(set);
    return rc;
}

int hv_device_set_irq_eventfds(int device_fd, uint32_t index, uint32_t start,
                               uint32_t count, const int32_t *eventfds)
{
    return set_irqs(device_fd,
                    VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
                    index, start, count, eventfds, count * sizeof(int32_t));
}

int hv_device_disable_irq(int device_fd, uint32_t index)
{
    /* DATA_NONE | ACTION_TRIGGER with count 0 tears the whole index down. */
    return set_irqs(device_fd, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
                    index, 0, 0, NULL, 0);
}

int hv_device_irq_action(int device_fd, uint32_t index, uint32_t start,
                         uint32_t count, uint32_t action)
{
    return set_irqs(device_fd, VFIO_IRQ_SET_DATA_NONE | action, index, start,
                    count, NULL, 0);
}

int hv_device_unmask_intx(int device_fd)
{
    return hv_device_irq_action(device_fd, VFIO_PCI_INTX_IRQ_INDEX, 0, 1,
                                VFIO_IRQ_SET_ACTION_UNMASK);
}

int hv_device_mask_intx(int device_fd)
{
    return hv_device_irq_action(device_fd, VFIO_PCI_INTX_IRQ_INDEX, 0, 1,
                                VFIO_IRQ_SET_ACTION_MASK);
}

int hv_device_reset(int device_fd)
{
    return ret_or_errno(ioctl(device_fd, VFIO_DEVICE_RESET));
}

/* ------------------------------------------------------------------ */
/* Memory.                                                             */
/* ------------------------------------------------------------------ */
int hv_mmap_region(int device_fd, uint64_t offset, uint64_t size, int writable,
                   void **out)
{
    int prot = PROT_READ | (writable ? PROT_WRITE : 0);
    void *p = mmap(NULL, size, prot, MAP_SHARED, device_fd, (off_t)offset);

    if (p == MAP_FAILED)
        return -errno;
    *out = p;
    return 0;
}

/*
 * DMA memory: zeroed, resident, and never moved while the device uses it.
 *  - hugetlb: a private memfd on 2 MiB pages. Hugetlb pages are never
 *    swapped or migrated, and mmap fails (ENOMEM) up front when the pool
 *    has too few free pages, instead of at first touch.
 *  - otherwise: anonymous pages, prefaulted and mlock()ed.
 * Both are marked MADV_DONTFORK so a fork() (multiprocessing, some
 * subprocess paths) never makes the parent's pages copy-on-write, which
 * would leave the device writing to pages the parent no longer sees.
 * VFIO_IOMMU_MAP_DMA pins the pages again for the IOMMU.
 */
int hv_dma_alloc(uint64_t size, int hugetlb, void **out)
{
    void *p;
    int err;

    if (hugetlb) {
        int fd = memfd_create("hwnic-dma", MFD_CLOEXEC | MFD_HUGETLB | HUGETLB_FLAG_ENCODE_2MB);
        if (fd < 0)
            return -errno;
        if (ftruncate(fd, (off_t)size) < 0) {
            err = -errno;
            close(fd);
            return err;
        }
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
        err = -errno;
        close(fd);  /* the mapping keeps the file alive */
        if (p == MAP_FAILED)
            return err;
    } else {
        p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        if (p == MAP_FAILED)
            return -errno;
        if (mlock(p, size) < 0) {
            err = -errno;
            munmap(p, size);
            return err;
        }
    }
    if (madvise(p, size, MADV_DONTFORK) < 0) {
        err = -errno;
        munmap(p, size);
        return err;
    }
    *out = p;
    return 0;
}

int hv_munmap(void *addr, uint64_t size)
{
    return munmap(addr, size) < 0 ? -errno : 0;
}
