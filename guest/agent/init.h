#pragma once
// PID 1 duties for when the agent is the guest's init.

namespace forkd::agent {

// Mounts /proc, /sys, /dev (devtmpfs), /dev/pts, tmpfs on /tmp, /run and /dev/shm; sets PATH and
// HOME; brings up lo; sets the hostname and links /etc/hostname to it (link_hostname_file).
// Failures are logged, never fatal.
void init_system();

// Forks: the child returns (and becomes the agent server); the parent stays PID 1, reaping
// every zombie forever (it never returns). Returns normally in the child only.
void split_reaper();

// Makes sure fds 0, 1 and 2 are open (on /dev/null if need be) so that no pipe lands there.
void ensure_std_fds();

}  // namespace forkd::agent
