#include "pipeline/stop.h"

#include <atomic>
#include <csignal>

#include "controller/controller.h"
#include "worker/worker.h"

namespace minas::pipeline {
namespace {

// The running controller or worker, for the signal handler: request_stop is
// a lock-free atomic store, safe in a handler.
std::atomic<Controller*> g_controller{nullptr};
std::atomic<Worker*> g_worker{nullptr};
std::atomic<bool> g_stop_requested{false};  // SIGINT or SIGTERM, not the budget

extern "C" void on_signal(int) {
  g_stop_requested.store(true);
  if (Controller* c = g_controller.load()) c->request_stop();
  if (Worker* w = g_worker.load()) w->request_stop();
}

}  // namespace

void install_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

bool stop_requested() {
  return g_stop_requested.load();
}

StopTarget::StopTarget(Controller* c) {
  g_controller = c;
}
StopTarget::StopTarget(Worker* w) {
  g_worker = w;
}
StopTarget::~StopTarget() {
  g_controller = nullptr;
  g_worker = nullptr;
}

}  // namespace minas::pipeline
