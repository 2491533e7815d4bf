# The devices of forkd's static QEMU build: the microvm machine and the virtio devices of a
# sandbox without a network (src/vmm/qemu_cmdline.cc). A sandbox with a network, or the pc
# machine, runs the installed QEMU instead.
CONFIG_MICROVM=y
CONFIG_VIRTIO_SERIAL=y
CONFIG_VIRTIO_BLK=y
CONFIG_VIRTIO_RNG=y
