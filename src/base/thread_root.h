#pragma once
// The root of every thread forkd starts. An exception escaping a thread is std::terminate of the
// whole process (the daemon and every request it serves), and the guest can provoke unexpected
// states, so each thread body runs inside guarded(): an exception fails that unit of work, is
// logged, and the thread ends normally.
#include <exception>
#include <string>
#include <string_view>
#include <utility>

#include "base/log.h"

namespace forkd {

// Runs body(); if it throws, logs it under `what` and calls on_failure(message) (which must not
// throw itself; it is guarded too). Returns true when body returned normally.
template <typename Body, typename OnFailure>
bool guarded(std::string_view what, Body&& body, OnFailure&& on_failure) noexcept {
  std::string message;
  try {
    std::forward<Body>(body)();
    return true;
  } catch (const std::exception& e) {
    message = e.what();
  } catch (...) {
    message = "unknown exception";
  }
  try {
    logger("thread")->error("event=thread_failed what={} error=\"{}\"", what, message);
    std::forward<OnFailure>(on_failure)(std::string(what) + ": internal error: " + message);
  } catch (...) {
  }
  return false;
}

template <typename Body>
bool guarded(std::string_view what, Body&& body) noexcept {
  return guarded(what, std::forward<Body>(body), [](const std::string&) {});
}

}  // namespace forkd
