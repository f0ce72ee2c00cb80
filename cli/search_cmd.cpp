// `minas controller` and `minas worker`: the two halves of a distributed search.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cli/command_line.h"
#include "cli/commands.h"
#include "cli/experiment_flags.h"
#include "cli/final_flags.h"
#include "cli/flag_ranges.h"
#include "cli/strategy_flags.h"
#include "controller/controller.h"
#include "db/store.h"
#include "pipeline/experiment.h"
#include "pipeline/search.h"
#include "searchspace/error.h"
#include "searchspace/json_read.h"
#include "searchspace/space.h"
#include "searchspace/text_file.h"
#include "trainer/backends.h"
#include "trainer/data.h"
#include "trainer/recipe.h"
#include "worker/worker.h"

namespace minas::cli {
namespace {

// The ranges of the options of `minas search` that are not experiment
// settings (those are pipeline/experiment.h's table); an experiment file's
// field meets its flag's check (set_from_file).
constexpr int kMaxLocalWorkers = 4096;
constexpr int kMaxThreads = 4096;

struct ControllerFlags {
  std::string db = "minas.db", bind = "tcp://127.0.0.1:5555";
  std::string key, allow, experiment;
  pipeline::ExperimentSettings settings;  // the experiment's, from flags and the file
  StrategyFlags strategy;
  int heartbeat_ms = 1000, liveness = 5, max_attempts = 3;
  std::string endpoint_file, advertise;
};

// An experiment file's JSON object, read through read_json (size and depth
// limits, errors with line, column and a short excerpt); an Error naming the
// file otherwise.
nlohmann::json experiment_object(const std::string& path) {
  nlohmann::json j =
      read_json(read_text_file(path, "experiment file", JsonLimits{}.max_bytes), path);
  if (!j.is_object()) throw Error(path, "an experiment file is a JSON object");
  return j;
}

// "FILE: /FIELD" for an experiment file's field, the field's name cut short.
std::string field_place(const std::string& file, const std::string& key) {
  return file + ": /" + printable_excerpt(key, 40);
}

// The endpoint as workers elsewhere reach it: a wildcard host (tcp://0.0.0.0:P,
// tcp://*:P) becomes `host` (default: this machine's name).
std::string advertised(const std::string& endpoint, std::string host) {
  const std::string tcp = "tcp://";
  if (endpoint.rfind(tcp, 0) != 0) return endpoint;
  const size_t colon = endpoint.rfind(':');
  const std::string bound = endpoint.substr(tcp.size(), colon - tcp.size());
  if (bound != "0.0.0.0" && bound != "*" && bound != "[::]") return endpoint;
  if (host.empty()) {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0)
      throw Error("controller --endpoint-file", "cannot read this host's name: give --advertise");
    host = name;
  }
  return tcp + host + endpoint.substr(colon);
}

// The endpoint file of a running controller: written whole (a temporary file
// renamed over it, so a reader never sees half of it) and removed at the end,
// so that workers started later do not wait on a controller that is gone.
class EndpointFile {
 public:
  EndpointFile() = default;
  EndpointFile(const EndpointFile&) = delete;
  EndpointFile& operator=(const EndpointFile&) = delete;
  ~EndpointFile() {
    if (!path_.empty()) std::remove(path_.c_str());
  }
  void write(const std::string& path, const std::string& endpoint) {
    const std::string tmp = path + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << endpoint << "\n";
      out.close();
      if (!out) throw Error(tmp, "cannot write the endpoint file");
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      throw Error(path, std::string("cannot write the endpoint file: ") + std::strerror(errno));
    path_ = path;
    log_line("controller", "endpoint " + endpoint + " written to " + path);
  }

 private:
  std::string path_;
};

// The fields of a `minas controller` experiment file: the experiment
// settings' (each sets the option of its name, _ for -), the strategy's
// after "recipe". For the error that lists them.
std::string controller_file_fields() {
  std::string list;
  for (const pipeline::ExperimentParam& p : pipeline::experiment_params()) {
    list += (list.empty() ? "" : ", ") + std::string(p.name);
    if (p.name == "recipe") list += ", strategy, strategy_settings, objective, asha";
  }
  return list;
}

bool is_setting(const std::string& field) {
  const auto& table = pipeline::experiment_params();
  return std::any_of(table.begin(), table.end(),
                     [&](const pipeline::ExperimentParam& p) { return p.name == field; });
}

// Sets every field of an experiment file that no flag set: the file is the
// experiment, the command line adjusts it. A field goes through its option's
// own checks (set_from_file), so it is refused as the flag would be.
void read_experiment_file(ControllerFlags& c, CLI::App& cmd) {
  const nlohmann::json j = experiment_object(c.experiment);
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const auto& v = it.value();
    const std::string where = field_place(c.experiment, k);
    if (c.strategy.read_file_field(k, v, where)) continue;
    if (k == "recipe" && v.is_object()) {
      if (cmd.count("--recipe") == 0) c.settings.recipe_inline = v;
      continue;
    }
    if (k != "strategy" && !is_setting(k))
      throw Error(where, "unknown field '" + printable_excerpt(k, 40) +
                             "' (fields: " + controller_file_fields() + ")");
    std::string flag = "--" + k;
    std::replace(flag.begin(), flag.end(), '_', '-');
    CLI::Option* opt = cmd.get_option(flag);
    if (opt->count() == 0) set_from_file(*opt, v, where);  // the command line's wins
  }
}

struct WorkerFlags {
  std::string connect = "tcp://127.0.0.1:5555", devices = "cpu", trainer = "cpu", table, metric,
              name, key, server_key, pool = "default", advertise;
  std::vector<std::string> tags;
  double delay = 0;
};

struct SearchFlags {
  std::string db = "minas.db", devices;
  std::string experiment;
  bool params_markdown = false;
  std::string budget = "20m", out;
  FinalFlags final;
  std::string pipeline = "screened";
  bool resume = false, no_final = false;
  pipeline::ExperimentSettings settings;  // the experiment's, from flags and the file
  StrategyFlags strategy;
  int workers = 0, threads = 1;
};

// The options of `minas search` are its one parameter table: an experiment
// file's field NAME sets --NAME (underscores for dashes) when the command line
// did not, through the option's own parsing and checks, so a value means the
// same in both places.
void apply_search_file(CLI::App& cmd, SearchFlags& f) {
  const nlohmann::json j = experiment_object(f.experiment);
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const auto& v = it.value();
    const std::string where = field_place(f.experiment, k);
    if (f.strategy.read_file_field(k, v, where)) continue;
    std::string flag = "--" + k;
    std::replace(flag.begin(), flag.end(), '_', '-');
    CLI::Option* opt = k == "experiment" || k == "help" || k == "params_markdown"
                           ? nullptr
                           : cmd.get_option_no_throw(flag);
    if (!opt)
      throw Error(where, "unknown field '" + printable_excerpt(k, 40) +
                             "' (the fields are the options of minas search "
                             "with _ for -, and strategy_settings, objective, "
                             "asha; minas search --help)");
    if (opt->count() > 0) continue;  // the command line's wins
    set_from_file(*opt, v, where);
  }
}

// The parameter table of docs/search.md: every option of minas search with
// its experiment-file field and default.
std::string search_params_markdown(CLI::App& cmd) {
  std::string md = "| option | file field | default | allowed | meaning |\n|---|---|---|---|---|\n";
  for (CLI::Option* o : cmd.get_options()) {
    const std::string name = o->get_single_name();
    if (name == "help" || name == "experiment" || name == "params-markdown") continue;
    std::string field = name;
    std::replace(field.begin(), field.end(), '-', '_');
    std::string def = o->get_default_str();
    if (def.empty()) def = o->get_type_size_max() == 0 || o->get_expected_max() == 0 ? "off" : "-";
    // The range or set its check allows, the flag's and the file field's alike.
    std::string allowed = "-";
    try {
      allowed = o->get_validator()->get_description();
    } catch (const CLI::OptionNotFound&) {  // no check: any text
    }
    auto cell = [](const std::string& text) {
      std::string out;
      for (char c : text) out += c == '|' ? std::string("\\|") : std::string(1, c);
      return out;
    };
    md += "| `--" + name + "` | `" + field + "` | " + def + " | " + cell(allowed) + " | " +
          cell(o->get_description()) + " |\n";
  }
  return md;
}

// The data set's fingerprint and files when the controller can read it; a
// controller may serve workers that have a data set it has not.
void fingerprint_if_readable(ExperimentConfig& cfg) {
  if (cfg.data == "simulated") return;
  try {
    pipeline::fingerprint_data(cfg, true);
  } catch (const Error& e) {
    log_line("controller",
             std::string("data set not readable here, so not fingerprinted: ") + e.what());
  }
}

ControllerOptions controller_options(const ControllerFlags& c) {
  ControllerOptions opt;
  opt.bind = c.bind;
  opt.heartbeat_ms = c.heartbeat_ms;
  opt.liveness = c.liveness;
  opt.max_attempts = c.max_attempts;
  opt.log = [](const std::string& l) { log_line("controller", l); };
  if (c.key.empty() != c.allow.empty())
    throw Error("controller", "CURVE needs both --key and --allow");
  if (!c.key.empty()) {
    opt.curve_key = auth::read_keypair(c.key);
    opt.allowed_workers = auth::read_allow_list(c.allow);
  }
  return opt;
}

void print_controller_summary(const std::string& name, const ControllerSummary& s) {
  std::printf(
      "{\"experiment\":\"%s\",\"done\":%lld,\"failed\":%lld,\"pruned\":%lld,"
      "\"rejected\":%lld,\"requeued\":%lld,\"late\":%lld,\"resumed\":%s,\"stopped\":%s}\n",
      name.c_str(), static_cast<long long>(s.done), static_cast<long long>(s.failed),
      static_cast<long long>(s.pruned), static_cast<long long>(s.rejected),
      static_cast<long long>(s.requeued), static_cast<long long>(s.late),
      s.resumed ? "true" : "false", s.stopped ? "true" : "false");
}

// `minas controller`: the experiment from its flags and file, served to the
// workers that connect until its budget is spent or a signal stops it.
void run_controller(ControllerFlags& c, CLI::App& ctl) {
  if (!c.experiment.empty()) read_experiment_file(c, ctl);
  pipeline::ExperimentSettings& es = c.settings;
  const std::string& name = es.config.name;
  if (name.empty()) throw Error("controller", "--name (or \"name\" in --experiment) is required");
  const Space space = Space::load(es.space);
  const Recipe recipe = pipeline::experiment_recipe(es, c.experiment);
  fingerprint_if_readable(es.config);
  const StrategySettings settings = c.strategy.settings(ctl, es.config.seed);
  const ExperimentConfig cfg = pipeline::experiment_config(
      es, recipe, settings,
      c.strategy.asha_settings(
          ctl, es.config.fidelity > 0 ? es.config.fidelity : static_cast<int>(recipe.epochs)));
  const ControllerOptions opt = controller_options(c);
  // Everything that can refuse the start, the address included, before the
  // store is opened: a refused start leaves no store file behind.
  check_controller_settings(cfg, opt);
  const auto strategy = make_strategy(space, settings);
  check_inherit(cfg, *strategy);
  ControllerSocket socket(opt);
  db::Store store = db::Store::open(c.db);
  Controller controller(store, space, *strategy, cfg, opt, std::move(socket));
  log_line("controller",
           "experiment '" + name + "' on " + controller.endpoint() + ", store " + c.db);
  EndpointFile published;
  if (!c.endpoint_file.empty())
    published.write(c.endpoint_file, advertised(controller.endpoint(), c.advertise));
  ControllerSummary s;
  {
    StopTarget target(&controller);
    install_stop_signals();
    s = controller.run();
  }
  print_controller_summary(name, s);
  if (!s.error.empty()) throw Error("experiment '" + name + "'", "the search stopped: " + s.error);
  if (s.stopped)
    log_line("controller", "stopped; continue with the same command (the experiment resumes)");
}

// The one-click search's options from the flags of `minas search`.
pipeline::SearchOptions search_options(SearchFlags& f, CLI::App& sr) {
  const pipeline::ExperimentSettings& es = f.settings;
  pipeline::SearchOptions o;
  o.db = f.db;
  o.recipe = pipeline::experiment_recipe(es, f.experiment);
  o.budget_s = parse_duration(f.budget, "--budget");
  f.final.apply(o);
  o.final_training = !f.no_final;
  o.resume = f.resume;
  o.out = f.out;
  o.pool.workers = f.workers;
  o.pool.threads = std::max(1, f.threads);
  o.pool.per_trial = std::max(1, es.config.gpus_per_trial);
  o.pool.devices = f.devices;
  // Every input is read and checked before the store is created, so a
  // refused command leaves no store behind.
  pipeline::check_search_options(o);
  o.strategy = f.strategy.settings(sr, es.config.seed);
  const int epochs =
      es.config.fidelity > 0 ? es.config.fidelity : static_cast<int>(o.recipe.epochs);
  o.experiment =
      pipeline::experiment_config(es, o.recipe, o.strategy, f.strategy.asha_settings(sr, epochs));
  // An experiment file's fields set the options, so they are in the line;
  // --experiment itself stays for what only a file holds (strategy
  // settings, objective, asha).
  o.reproduce =
      reproduce_line(sr, "minas search", {"resume", "params-markdown"}, es.config.seed, f.budget);
  return o;
}

// The settings `--pipeline screened` stands for: screening thousands of
// architectures at initialization (synflow and params, by the sum of their
// ranks: Kendall tau 0.61 against the ground truth's 10-epoch validation
// accuracy on its first 38 rows, where synflow alone has 0.55 and params
// 0.39; on the complete table of 61, 0.53 against synflow's 0.55,
// experiments/evaluators.md),
// the predictor-guided strategy warm-started from the best of them, each
// trial one quarter-epoch run (no ASHA: a first version with a quarter-epoch
// rung finished no trial in 14 minutes, its first trials the largest nets),
// trials ranked by the accuracy their speed promises in a fixed time (the
// time-aware reward with the exponent the ground truth gives a quarter-epoch
// run, 0.237: ranked by accuracy alone, the first measured runs picked
// MBConv nets that got 4 to 7 final epochs), half the budget for the final
// training (its error falls as epochs^-0.237: 1.7 times the epochs of 30%
// take an eighth off it), and the final architecture chosen for the final
// training's time.
const std::vector<std::pair<std::string, nlohmann::json>>& screened_pipeline() {
  static const std::vector<std::pair<std::string, nlohmann::json>> list = {
      {"--screen", 2000},          {"--screen-evaluator", "synflow+params"},
      {"--screen-order", "front"}, {"--strategy", "predictor"},
      {"--fidelity", 1},           {"--trial-fraction", 0.25},
      {"--no-asha", true},         {"--time-exponent", 0.237},
      {"--final-share", 0.5},      {"--final-pick", "final-time"}};
  return list;
}

// Sets what the pipeline stands for where neither a flag nor the experiment
// file did: a setting given always wins, so each stays its own choice.
void apply_pipeline(CLI::App& sr, SearchFlags& f) {
  if (f.pipeline == "classic") return;
  // Early stopping asked for (rungs, eta, or in the file) keeps whole-epoch
  // trials: short runs have no rungs.
  const bool asha_given = sr.count("--no-asha") > 0 || sr.count("--asha-eta") > 0 ||
                          sr.count("--asha-rungs") > 0 || !f.strategy.file_asha.is_null();
  // ASHA on without rungs of its own places them below the trials' epochs,
  // so those keep the fidelity given (default 3): one epoch leaves none.
  const bool asha_on = asha_given && !(sr.count("--no-asha") > 0 && sr["--no-asha"]->as<bool>());
  const bool rungs_given = sr.count("--asha-rungs") > 0 ||
                           (f.strategy.file_asha.is_object() && f.strategy.file_asha.contains("rungs"));
  for (const auto& [flag, value] : screened_pipeline()) {
    CLI::Option* opt = sr.get_option(flag);
    if (opt->count() > 0) continue;
    // Whole-epoch trials learn on another curve than a quarter epoch's.
    if ((flag == "--trial-fraction" || flag == "--no-asha" || flag == "--time-exponent") &&
        asha_given)
      continue;
    if (flag == "--fidelity" && asha_on && !rungs_given) continue;
    // An objective in the experiment file that sets it is a setting given.
    const nlohmann::json& file_objective = f.strategy.file_settings.value(
        "objective", nlohmann::json::object());
    if (flag == "--time-exponent" && file_objective.contains("time_exponent")) continue;
    set_from_file(*opt, value, "--pipeline " + f.pipeline + ": " + flag);
  }
}

// `minas search`: the search, the final training and the export; the
// summary as one JSON line on stdout.
void run_search_command(SearchFlags& f, CLI::App& sr) {
  const auto started = std::chrono::steady_clock::now();  // the budget counts from here
  if (!f.experiment.empty()) apply_search_file(sr, f);
  apply_pipeline(sr, f);
  const Space space = Space::load(f.settings.space);
  pipeline::SearchOptions o = search_options(f, sr);
  o.started = started;
  const pipeline::SearchResult r = pipeline::run_search(space, o);
  const ControllerSummary& s = r.summary;
  nlohmann::json summary = {{"experiment", r.experiment}, {"done", s.done},
                            {"failed", s.failed},         {"pruned", s.pruned},
                            {"rejected", s.rejected},     {"stopped", s.stopped}};
  if (r.interrupted) {
    std::printf("%s\n", summary.dump().c_str());
    log_line("search", "stopped; continue with: minas search --resume --db " + f.db + " --name " +
                           r.experiment);
    return;
  }
  if (r.final) {
    summary["arch"] = r.final->arch;
    summary["test_acc"] = r.final->test_acc;
    summary["params"] = r.final->params;
    summary["macs"] = r.final->macs;
    summary["out"] = r.final->out;
  }
  std::printf("%s\n", summary.dump().c_str());
}

// `minas worker`: trains the trials of the controller it connects to until
// it says goodbye or a signal stops it.
void run_worker(const WorkerFlags& w) {
  WorkerOptions opt;
  opt.connect = w.connect;
  opt.slots = parse_devices(w.devices);
  opt.name = w.name;
  if (w.pool.empty()) throw Error("worker --pool", "a pool needs a name");
  opt.pool = w.pool;
  opt.advertise = w.advertise;
  for (const std::string& t : w.tags) {
    const size_t eq = t.find('=');
    if (eq == std::string::npos || eq == 0)
      throw Error("worker --tag " + t, "a tag is KEY=VALUE, e.g. --tag gpu=h100");
    opt.tags[t.substr(0, eq)] = t.substr(eq + 1);
  }
  if (w.trainer == "sim") {
    if (w.table.empty() || w.metric.empty())
      throw Error("worker --trainer sim", "needs --table CSV and --metric COLUMN");
    opt.runner = make_sim_runner(w.table, w.metric, w.delay);
  } else {
    if (!built_with_gpu_backend())
      for (const auto& s : opt.slots)
        if (s.id.rfind("cuda", 0) == 0)
          throw Error("worker --devices " + w.devices,
                      "this build has no GPU backend (CUDA, cuDNN or NCCL were not found when it "
                      "was configured)");
    opt.runner = make_cpu_runner();
  }
  opt.log = [name = w.name](const std::string& l) { log_line(name.empty() ? "worker" : name, l); };
  if (w.key.empty() != w.server_key.empty())
    throw Error("worker", "CURVE needs both --key and --server-key");
  if (!w.key.empty()) {
    opt.curve_key = auth::read_keypair(w.key);
    opt.server_public_key = auth::read_public_key(w.server_key);
  }
  Worker worker(opt);
  StopTarget target(&worker);
  install_stop_signals();
  worker.run();
}

void add_controller_command(CLI::App& app) {
  auto c = std::make_shared<ControllerFlags>();
  CLI::App* ctl =
      app.add_subcommand("controller", "Run a search: the controller that workers connect to");
  ctl->add_option("--db", c->db, "Experiment store (created if missing)")->default_val("minas.db");
  ctl->add_option("--bind", c->bind, "Endpoint to bind (tcp://HOST:PORT, ipc://PATH)")
      ->default_val("tcp://127.0.0.1:5555");
  add_setting(ctl, c->settings, "name");
  add_setting(ctl, c->settings, "space");
  add_setting(ctl, c->settings, "data");
  add_setting(ctl, c->settings, "recipe");
  c->strategy.add(ctl, true);
  add_setting(ctl, c->settings, "trials");
  add_setting(ctl, c->settings, "seconds");
  add_setting(ctl, c->settings, "fidelity");
  add_setting(ctl, c->settings, "trial_fraction");
  add_setting(ctl, c->settings, "seed");
  add_setting(ctl, c->settings, "gpus_per_trial");
  add_setting(ctl, c->settings, "train_pool");
  add_setting(ctl, c->settings, "latency_pool");
  add_setting(ctl, c->settings, "screen");
  add_setting(ctl, c->settings, "screen_evaluator");
  add_setting(ctl, c->settings, "screen_batch");
  add_setting(ctl, c->settings, "screen_order");
  add_setting(ctl, c->settings, "inherit");
  ctl->add_option("--endpoint-file", c->endpoint_file,
                  "Write the endpoint workers connect to into this file once bound (on a shared "
                  "file system for a cluster's workers); removed when the controller ends");
  ctl->add_option("--advertise", c->advertise,
                  "The host name or address written to --endpoint-file in place of a wildcard "
                  "bind address (default: this host's name)");
  // Below 10 ms the loop would spend itself on heartbeats; above an hour a
  // lost worker would hold its trials for most of a day (x --liveness).
  ctl->add_option("--heartbeat-ms", c->heartbeat_ms, "Heartbeat interval")
      ->default_val(1000)
      ->check(in_range(10, 3'600'000));
  ctl->add_option("--liveness", c->liveness, "Missed heartbeats before a worker is lost")
      ->default_val(5)
      ->check(in_range(1, 1000));
  ctl->add_option("--max-attempts", c->max_attempts, "Attempts of a trial before it fails")
      ->default_val(3)
      ->check(in_range(1, 1000));
  ctl->add_option("--key", c->key, "CURVE: the controller's key pair file (minas keygen)");
  ctl->add_option("--allow", c->allow,
                  "CURVE: the workers' public keys (a file, or a folder of .pub)");
  ctl->add_option("--experiment", c->experiment,
                  "Experiment file (JSON): name, space, data, recipe (object or file), strategy, "
                  "strategy_settings, objective, asha, trials, seconds, fidelity, trial_fraction, seed, "
                  "screen, "
                  "screen_evaluator, screen_batch; flags given override it");
  ctl->callback([c, ctl] { run_controller(*c, *ctl); });
}

void add_search_command(CLI::App& app) {
  auto sf = std::make_shared<SearchFlags>();
  CLI::App* sr = app.add_subcommand(
      "search", "A search on this machine: the controller and local workers in one command");
  sr->add_option("--db", sf->db, "Experiment store")->default_val("minas.db");
  add_setting(sr, sf->settings, "name",
              {"", "Experiment name (default search-DATE-TIME; an existing one resumes)"});
  add_setting(sr, sf->settings, "space", {"", "Search space"});
  add_setting(sr, sf->settings, "data", {"", "Data set"});
  add_setting(sr, sf->settings, "recipe");
  add_setting(sr, sf->settings, "trials",
              {"1000000", "Trial budget (the time budget usually ends it first)"});
  sr->add_option("--budget", sf->budget,
                 "Wall-clock budget of the whole run, search and final training: 90s, 45m, 1h30m")
      ->default_val("20m")
      ->check(duration_check("--budget"));
  sf->final.add(sr);
  sr->add_option("--pipeline", sf->pipeline,
                 "screened: --screen 2000 --screen-evaluator synflow+params --screen-order "
                 "front --strategy predictor --fidelity 1 --trial-fraction 0.25 --no-asha "
                 "--time-exponent 0.237 --final-share 0.5 --final-pick final-time, each unless "
                 "given (with ASHA asked for, trials keep whole epochs, and without --asha-rungs "
                 "the fidelity given); classic: the settings as given (evolution, 3-epoch "
                 "trials with ASHA, 30% for the final training, chosen by validation accuracy)")
      ->default_val("screened")
      ->check(CLI::IsMember({"classic", "screened"}));
  sr->add_flag("--no-final", sf->no_final, "Search only: no final training and export");
  sr->add_option("--out", sf->out, "Export folder (default runs/EXPERIMENT)");
  sr->add_flag("--resume", sf->resume,
               "Continue the store's latest experiment (or --name's) within what is left of the "
               "budget");
  add_setting(sr, sf->settings, "fidelity", {"3", "Epochs per trial in the search"});
  add_setting(sr, sf->settings, "trial_fraction");
  sr->add_option("--workers", sf->workers,
                 "Local workers (default: one per core the process may use)")
      ->default_val(0)
      ->check(in_range(0, kMaxLocalWorkers));
  sr->add_option("--threads", sf->threads, "CPU threads per worker slot")
      ->default_val(1)
      ->check(in_range(1, kMaxThreads));
  sr->add_option("--devices", sf->devices,
                 "One local worker with these slots instead (cpu:T,..., cuda:0,1, cuda:0x4 for "
                 "four trials at once on GPU 0)");
  add_setting(sr, sf->settings, "gpus_per_trial",
              {"", "Slots (of --threads each) one trial trains on, data parallel"});
  add_setting(sr, sf->settings, "seed");
  add_setting(sr, sf->settings, "screen");
  add_setting(sr, sf->settings, "screen_evaluator");
  add_setting(sr, sf->settings, "screen_batch");
  add_setting(sr, sf->settings, "screen_order");
  add_setting(sr, sf->settings, "inherit");
  sf->strategy.add(sr, true, "evolution", true);
  sr->add_option("--experiment", sf->experiment,
                 "Experiment file (JSON): any option above as a field, _ for -; the command line "
                 "overrides it");
  sr->add_flag("--params-markdown", sf->params_markdown,
               "Print the parameter table of docs/search.md and exit")
      ->group("");
  sr->callback([sf, sr] {
    if (sf->params_markdown) {
      std::printf("%s", search_params_markdown(*sr).c_str());
      return;
    }
    run_search_command(*sf, *sr);
  });
}

void add_worker_command(CLI::App& app) {
  auto w = std::make_shared<WorkerFlags>();
  CLI::App* wk = app.add_subcommand("worker", "Train trials for a controller");
  wk->add_option("--connect", w->connect, "The controller's endpoint")
      ->default_val("tcp://127.0.0.1:5555");
  wk->add_option("--devices", w->devices, "cpu, cpu:THREADS, cuda:0,1 (one slot each)")
      ->default_val("cpu");
  wk->add_option("--trainer", w->trainer, "cpu (real training) or sim (answers from --table)")
      ->default_val("cpu")
      ->check(CLI::IsMember({"cpu", "sim"}));
  wk->add_option("--table", w->table, "sim: CSV with an 'arch' column");
  wk->add_option("--metric", w->metric, "sim: the column read as val_acc");
  wk->add_option("--delay", w->delay, "sim: seconds of pretend training per trial")
      ->default_val(0)
      ->check(in_range(0.0, 86400.0));
  wk->add_option("--name", w->name, "Worker identity (default host:pid)");
  wk->add_option("--key", w->key, "CURVE: this worker's key pair file (minas keygen)");
  wk->add_option("--server-key", w->server_key, "CURVE: the controller's public key file (.pub)");
  wk->add_option("--pool", w->pool,
                 "The pool it belongs to: an experiment may train on one pool and measure "
                 "latency on another (--train-pool, --latency-pool)")
      ->default_val("default");
  wk->add_option("--tag", w->tags, "A label KEY=VALUE (repeatable): GPU model, site, ...");
  wk->add_option("--advertise", w->advertise,
                 "The host name or address other workers reach this one by, for trials spread "
                 "over several workers (default: this host's name)");
  wk->callback([w] { run_worker(*w); });
}

}  // namespace

void add_search_commands(CLI::App& app) {
  add_controller_command(app);
  add_search_command(app);
  add_worker_command(app);
}

}  // namespace minas::cli
