#pragma once
// The dashboard's JSON API over a read-only connection to the store: one
// function from a path and its query parameters to a status and a body, so
// that it is tested without a server and served by any.
// It holds no SQL of its own: it asks db/queries.h (the questions it
// shares with `minas query`) and db/live_queries.h, and turns the rows into JSON.
//
// Every endpoint answers from indexes and returns a bounded number of rows:
//   /api/experiments                       every experiment (at most 1,000): status counts, best
//   /api/experiment?experiment=E           one experiment's overview: counts, best, budget used,
//                                          the best-so-far curve (kept on write; at most 500
//                                          points), the change number reached
//   /api/trials?experiment=E[&sort=number|val_acc|finished_at|seq][&order=asc|desc]
//              [&status=S][&after=CURSOR][&limit=N<=500]
//                                          a page of trials, sorted on an indexed column, with the
//                                          cursor of the next page (keyset pagination; ties in
//                                          the same direction by number); val_acc
//                                          sorts done trials, finished_at finished ones
//   /api/trial?experiment=E&number=N[&points=P<=1000]
//                                          one trial: its row, its learning curve downsampled to P
//                                          points (default 200), its lineage and children, its
//                                          decisions and a summary of its layer graph by block,
//                                          the change number reached
//   /api/changes?experiment=E&since=SEQ[&limit=N<=500]
//                                          the trials changed since change number SEQ, oldest
//                                          change first, with the counts and the number reached:
//                                          what a live page asks for instead of reloading
//   /api/pareto?experiment=E&x=latency_ms|params|macs
//                                          the front of validation accuracy against x, and up to
//                                          2,000 other done trials for the scatter
//   /api/failures?experiment=E[&limit=N<=500]   failed trials with their errors, the latest
//                                          failure first (db::failures, as `minas query failures`)
//   /api/workers[?experiment=E]            workers: devices, last seen, utilization
//   /api/pool?experiment=E[&points=P<=1000]  workers, slots, busy slots and queue over time:
//                                          the pool's state at P instants (default 300)
//   /api/internals?experiment=E[&points=P<=1000]  the strategy's snapshots over results
//                                          (evolution: population scores; REINFORCE: reward,
//                                          baseline, entropy), at most P (default 500)
//   /api/data_reports[?experiment=E]       validation reports of adaptation runs (at most 50)
// Each endpoint's parameters are checked against its table in api.cpp before
// anything reads them: a parameter it does not take, a value of the wrong
// kind, out of range, not valid UTF-8, holding a control character or too
// long is a 400 with {"error": "..."} naming the parameter (a value quoted in
// a message is escaped and cut short); an empty value counts as absent; an
// unknown endpoint, experiment or trial is a 404. A failure of the store or
// of the server is a 500 (503 when the store stayed locked) whose message
// says so in general terms: the details go to `fault`, for the server's log,
// never into an answer. Every body is valid UTF-8 JSON, whatever the store
// holds (text that is not UTF-8 has its bad bytes replaced).
#include <map>
#include <string>
#include <vector>

#include "db/sqlite.h"

namespace minas::dashboard {

struct ApiResponse {
  int status = 200;
  std::string body;   // JSON
  std::string fault;  // what went wrong on the server's side, for its log; empty if nothing
};

// The endpoints and their parameters as the checks know them (for tests and
// docs): a parameter's kind is "name", "choice", "integer" or "cursor".
struct ParamInfo {
  std::string name;
  std::string kind;
  bool required = false;
};
struct EndpointInfo {
  std::string path;
  std::vector<ParamInfo> params;
};
std::vector<EndpointInfo> api_endpoints();

ApiResponse handle_api(db::Connection& conn, const std::string& path,
                       const std::map<std::string, std::string>& params);

}  // namespace minas::dashboard
