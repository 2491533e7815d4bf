#pragma once
// Brings the pages of a file into the page cache, writable, on a thread of its own, from the end
// of the file toward its start, while another process (a branch's destination QEMU) writes the
// same file from its start. Each first touch of a page costs a page allocation, and on hosts
// that return free memory to their hypervisor a fault there too (~2.5 s per GiB measured); a
// second core takes part of that off the writer's path. Best effort: without the thread, the
// mapping or MADV_POPULATE_WRITE (Linux 5.14) it does nothing.
#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

namespace forkd {

class FilePrefaulter {
 public:
  FilePrefaulter(const std::string& path, uint64_t bytes);
  ~FilePrefaulter();  // stops and joins
  FilePrefaulter(const FilePrefaulter&) = delete;
  FilePrefaulter& operator=(const FilePrefaulter&) = delete;

  // Ends the work after the chunk in hand and waits for the thread.
  void stop();
  // Waits until the whole file is in (or the thread gave up).
  void wait();
  // Bytes brought in so far.
  uint64_t done_bytes() const { return done_.load(); }

 private:
  void run(int fd, uint64_t bytes);
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> done_{0};
  std::thread thread_;
};

}  // namespace forkd
