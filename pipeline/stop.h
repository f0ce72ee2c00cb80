#pragma once
// Stopping a running search on Ctrl-C or SIGTERM: the handler asks the
// registered controller and worker to stop (a lock-free store, safe in a
// handler); the search then ends as if its budget had, and resumes later.
namespace minas {
class Controller;
class Worker;
}  // namespace minas

namespace minas::pipeline {

void install_stop_signals();
bool stop_requested();  // a signal came, as opposed to the budget ending

// Registers a controller or a worker with the handler for its scope.
class StopTarget {
 public:
  explicit StopTarget(Controller* c);
  explicit StopTarget(Worker* w);
  ~StopTarget();
  StopTarget(const StopTarget&) = delete;
  StopTarget& operator=(const StopTarget&) = delete;
};

}  // namespace minas::pipeline
