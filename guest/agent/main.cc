// forkd-agent: the guest side of the forkd agent protocol (see src/proto/PROTOCOL.md).
//   forkd-agent                      serve on the virtio-serial port org.forkd.agent
//   forkd-agent --port PATH          serve on PATH (opened read/write)
//   forkd-agent --listen-unix PATH   serve connections on a unix socket, one at a time (tests)
//   --no-system-identity             `resumed` leaves the clock and hostname alone (tests on a
//                                    host machine); it still reseeds the kernel RNG
// As PID 1 it first sets up the system (init.h) and leaves a reaper behind as PID 1.
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>

#include "identity.h"
#include "init.h"
#include "log.h"
#include "port.h"
#include "python_worker.h"
#include "server.h"

namespace {

constexpr int kPortWaitMs = 10'000;

int usage() {
  forkd::agent::log_line(
      "usage: forkd-agent [--port PATH | --listen-unix PATH] [--no-system-identity]");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace forkd::agent;
  std::string port_path, unix_path;
  ResumedOptions opts;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if ((arg == "--port" || arg == "--listen-unix") && i + 1 < argc) {
      (arg == "--port" ? port_path : unix_path) = argv[++i];
    } else if (arg == "--no-system-identity") {
      opts.system_identity = false;
    } else if (arg == "--version") {
      log_line(kAgentVersion);
      return 0;
    } else {
      return usage();
    }
  }
  ensure_std_fds();
  if (::getpid() == 1) {
    init_system();
    split_reaper();  // returns in the server process only
  }
  ::signal(SIGPIPE, SIG_IGN);
  keep_rng_device_open();
  // SIGIO (virtio port state changes) is consumed with sigtimedwait by the reader; block it in
  // every thread, i.e. before any thread exists.
  sigset_t sigio;
  sigemptyset(&sigio);
  sigaddset(&sigio, SIGIO);
  ::pthread_sigmask(SIG_BLOCK, &sigio, nullptr);

  log_line(std::string("starting version=") + kAgentVersion + " pid=" + std::to_string(::getpid()));
  // Lives for the whole process: detached request threads use it.
  static PythonWorker python;
  python.start_async();

  forkd::Result<std::unique_ptr<Port>> port = !unix_path.empty() ? open_unix_listener(unix_path)
                                              : !port_path.empty()
                                                  ? open_path_port(port_path)
                                                  : open_virtio_port(kAgentPortName, kPortWaitMs);
  if (!port) {
    log_line("cannot open the host channel: " + port.error().message());
    // _exit: skip static destructors, which would wait for a worker still starting. The worker
    // sees EOF on its request pipe and exits.
    ::_exit(1);
  }
  static Server server(port->get(), &python, opts);
  server.run();
}
