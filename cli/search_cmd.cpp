// `minas controller` and `minas worker`: the two halves of a distributed search.
#include <algorithm>
#include <cctype>
#include <cerrno>
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

#include "cli/commands.h"
#include "cli/final_model.h"
#include "cli/flag_ranges.h"
#include "cli/local_search.h"
#include "cli/strategy_flags.h"
#include "controller/controller.h"
#include "db/store.h"
#include "searchspace/error.h"
#include "searchspace/json_read.h"
#include "searchspace/space.h"
#include "searchspace/text_file.h"
#include "trainer/data.h"
#include "trainer/recipe.h"
#include "worker/worker.h"

namespace minas::cli {
namespace {

// The ranges of the settings `minas controller` and `minas search` share; an
// experiment file's field meets its flag's check (set_from_file).
constexpr int64_t kMaxTrials = 1'000'000'000;
constexpr double kMaxSeconds = 1e9;  // some 30 years
constexpr int kMaxEpochs = 100000;
constexpr int kMaxSlotsPerTrial = 1024;
constexpr int kMaxLocalWorkers = 4096;
constexpr int kMaxThreads = 4096;

struct ControllerFlags {
  std::string db = "minas.db", bind = "tcp://127.0.0.1:5555", space = "small",
              data = "fashion-mnist";
  std::string name, recipe, key, allow, experiment;
  StrategyFlags strategy;
  nlohmann::json recipe_inline;  // from an experiment file's "recipe" object
  int64_t trials = 100;
  double seconds = 0;
  int fidelity = 0, heartbeat_ms = 1000, liveness = 5, max_attempts = 3, gpus_per_trial = 1;
  uint64_t seed = 0;
  std::string train_pool, latency_pool;
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

// The fields of a `minas controller` experiment file besides the strategy's
// and "recipe": each sets the option of its name (_ for -).
constexpr const char* kControllerFileFields[] = {
    "name",     "space", "data",           "strategy",   "trials",      "seconds",
    "fidelity", "seed",  "gpus_per_trial", "train_pool", "latency_pool"};

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
      if (cmd.count("--recipe") == 0) c.recipe_inline = v;
      continue;
    }
    const bool known = k == "recipe" ||
                       std::find(std::begin(kControllerFileFields), std::end(kControllerFileFields),
                                 k) != std::end(kControllerFileFields);
    if (!known)
      throw Error(where, "unknown field '" + printable_excerpt(k, 40) +
                             "' (fields: name, space, data, recipe, strategy, strategy_settings, "
                             "objective, asha, trials, seconds, fidelity, seed, gpus_per_trial, "
                             "train_pool, latency_pool)");
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
  std::string db = "minas.db", space = "small", data = "fashion-mnist", name, recipe, devices;
  std::string experiment;
  bool params_markdown = false;
  std::string budget = "20m", out;
  double final_share = 0.3;
  int final_epochs = 30;
  bool resume = false, no_final = false;
  StrategyFlags strategy;
  int64_t trials = 20;
  double seconds = 0;
  int fidelity = 0, workers = 0, threads = 1, gpus_per_trial = 1;
  uint64_t seed = 0;
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

}  // namespace

void add_search_commands(CLI::App& app) {
  auto c = std::make_shared<ControllerFlags>();
  CLI::App* ctl =
      app.add_subcommand("controller", "Run a search: the controller that workers connect to");
  ctl->add_option("--db", c->db, "Experiment store (created if missing)")->default_val("minas.db");
  ctl->add_option("--bind", c->bind, "Endpoint to bind (tcp://HOST:PORT, ipc://PATH)")
      ->default_val("tcp://127.0.0.1:5555");
  ctl->add_option("--name", c->name, "Experiment name (an existing one is resumed)");
  ctl->add_option("--space", c->space, "Search space (name or file, with overrides)")
      ->default_val("small");
  ctl->add_option("--data", c->data, "Data set the workers train on, or 'simulated'")
      ->default_val("fashion-mnist");
  ctl->add_option("--recipe", c->recipe, "Training recipe (JSON file)");
  c->strategy.add(ctl, true);
  ctl->add_option("--trials", c->trials, "Trial budget")
      ->default_val(100)
      ->check(in_range<int64_t>(1, kMaxTrials));
  ctl->add_option("--seconds", c->seconds, "Wall-clock budget, 0 for none")
      ->default_val(0)
      ->check(in_range(0.0, kMaxSeconds));
  ctl->add_option("--fidelity", c->fidelity, "Epochs per trial, 0 for the recipe's")
      ->default_val(0)
      ->check(in_range(0, kMaxEpochs));
  ctl->add_option("--seed", c->seed, "Strategy seed")
      ->default_val(0)
      ->check(any_of_type<uint64_t>());
  ctl->add_option("--gpus-per-trial", c->gpus_per_trial,
                  "Device slots of one worker a trial trains on, data parallel (GPUs; CPU slots "
                  "likewise)")
      ->default_val(1)
      ->check(in_range(1, kMaxSlotsPerTrial));
  ctl->add_option("--train-pool", c->train_pool,
                  "Only workers of this pool (minas worker --pool) train; default: any");
  ctl->add_option("--latency-pool", c->latency_pool,
                  "Workers of this pool measure each architecture's batch-1 latency (on the "
                  "objective's latency device, else their own) before it is trained elsewhere");
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
                  "strategy_settings, objective, asha, trials, seconds, fidelity, seed; flags "
                  "given override it");
  ctl->callback([c, ctl] {
    if (!c->experiment.empty()) read_experiment_file(*c, *ctl);
    if (c->name.empty())
      throw Error("controller", "--name (or \"name\" in --experiment) is required");
    const Space space = Space::load(c->space);
    Recipe recipe = !c->recipe_inline.is_null()
                        ? Recipe::from_json(c->recipe_inline, c->experiment + ": /recipe")
                    : c->recipe.empty() ? Recipe()
                                        : Recipe::load(c->recipe);
    ExperimentConfig cfg;
    cfg.name = c->name;
    cfg.data = c->data;
    if (c->data != "simulated") {
      try {
        cfg.data_fingerprint = data::load_dataset(c->data).train.fingerprint();
        cfg.data_files = data::dataset_files(c->data);
      } catch (const Error& e) {
        log_line("controller",
                 std::string("data set not readable here, so not fingerprinted: ") + e.what());
      }
    }
    cfg.recipe = recipe.to_json();
    cfg.fidelity = c->fidelity;
    cfg.gpus_per_trial = c->gpus_per_trial;
    cfg.train_pool = c->train_pool;
    cfg.latency_pool = c->latency_pool;
    cfg.budget_trials = c->trials;
    cfg.budget_seconds = c->seconds;
    cfg.seed = c->seed;
    const StrategySettings settings = c->strategy.settings(*ctl, c->seed);
    cfg.strategy_settings = settings.to_json();
    cfg.objective = settings.objective;
    cfg.asha = c->strategy.asha_settings(
        *ctl, c->fidelity > 0 ? c->fidelity : static_cast<int>(recipe.epochs));
    ControllerOptions opt;
    opt.bind = c->bind;
    opt.heartbeat_ms = c->heartbeat_ms;
    opt.liveness = c->liveness;
    opt.max_attempts = c->max_attempts;
    opt.log = [](const std::string& l) { log_line("controller", l); };
    if (c->key.empty() != c->allow.empty())
      throw Error("controller", "CURVE needs both --key and --allow");
    if (!c->key.empty()) {
      opt.curve_key = auth::read_keypair(c->key);
      opt.allowed_workers = auth::read_allow_list(c->allow);
    }
    // Everything that can refuse the start, the address included, before the
    // store is opened: a refused start leaves no store file behind.
    check_controller_settings(cfg, opt);
    const auto strategy = make_strategy(space, settings);
    ControllerSocket socket(opt);
    db::Store store = db::Store::open(c->db);
    Controller controller(store, space, *strategy, cfg, opt, std::move(socket));
    log_line("controller",
             "experiment '" + c->name + "' on " + controller.endpoint() + ", store " + c->db);
    EndpointFile published;
    if (!c->endpoint_file.empty())
      published.write(c->endpoint_file, advertised(controller.endpoint(), c->advertise));
    ControllerSummary s;
    {
      StopTarget target(&controller);
      install_stop_signals();
      s = controller.run();
    }
    std::printf(
        "{\"experiment\":\"%s\",\"done\":%lld,\"failed\":%lld,\"pruned\":%lld,"
        "\"rejected\":%lld,\"requeued\":%lld,\"late\":%lld,\"resumed\":%s,\"stopped\":%s}\n",
        c->name.c_str(), static_cast<long long>(s.done), static_cast<long long>(s.failed),
        static_cast<long long>(s.pruned), static_cast<long long>(s.rejected),
        static_cast<long long>(s.requeued), static_cast<long long>(s.late),
        s.resumed ? "true" : "false", s.stopped ? "true" : "false");
    if (!s.error.empty())
      throw Error("experiment '" + c->name + "'", "the search stopped: " + s.error);
    if (s.stopped)
      log_line("controller", "stopped; continue with the same command (the experiment resumes)");
  });

  auto sf = std::make_shared<SearchFlags>();
  CLI::App* sr = app.add_subcommand(
      "search", "A search on this machine: the controller and local workers in one command");
  sr->add_option("--db", sf->db, "Experiment store")->default_val("minas.db");
  sr->add_option("--name", sf->name,
                 "Experiment name (default search-DATE-TIME; an existing one resumes)");
  sr->add_option("--space", sf->space, "Search space")->default_val("small");
  sr->add_option("--data", sf->data, "Data set")->default_val("fashion-mnist");
  sr->add_option("--recipe", sf->recipe, "Training recipe (JSON file)");
  sr->add_option("--trials", sf->trials, "Trial budget (the time budget usually ends it first)")
      ->default_val(1000000)
      ->check(in_range<int64_t>(1, kMaxTrials));
  sr->add_option("--budget", sf->budget,
                 "Wall-clock budget of the whole run, search and final training: 90s, 45m, 1h30m")
      ->default_val("20m")
      ->check(duration_check("--budget"));
  sr->add_option("--final-share", sf->final_share,
                 "Share of the budget kept for the final training")
      ->default_val(0.3)
      ->check(in_range(0.05, 0.95));
  sr->add_option("--final-epochs", sf->final_epochs,
                 "Epochs of the final training (at most; it also ends with its share of the "
                 "budget)")
      ->default_val(30)
      ->check(in_range(1, kMaxEpochs));
  sr->add_flag("--no-final", sf->no_final, "Search only: no final training and export");
  sr->add_option("--out", sf->out, "Export folder (default runs/EXPERIMENT)");
  sr->add_flag("--resume", sf->resume,
               "Continue the store's latest experiment (or --name's) within what is left of the "
               "budget");
  sr->add_option("--fidelity", sf->fidelity, "Epochs per trial in the search")
      ->default_val(3)
      ->check(in_range(0, kMaxEpochs));
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
  sr->add_option("--gpus-per-trial", sf->gpus_per_trial,
                 "Slots (of --threads each) one trial trains on, data parallel")
      ->default_val(1)
      ->check(in_range(1, kMaxSlotsPerTrial));
  sr->add_option("--seed", sf->seed, "Strategy seed")
      ->default_val(0)
      ->check(any_of_type<uint64_t>());
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
    if (!sf->experiment.empty()) apply_search_file(*sr, *sf);
    const Space space = Space::load(sf->space);
    const Recipe recipe = sf->recipe.empty() ? Recipe() : Recipe::load(sf->recipe);
    const int cores = detect_slots().front().threads;
    const int threads = std::max(1, sf->threads);
    const int per_trial = std::max(1, sf->gpus_per_trial);
    const int workers = sf->workers > 0 ? sf->workers : std::max(1, cores / (threads * per_trial));
    const double budget = parse_duration(sf->budget, "--budget");
    if (sf->resume && !std::filesystem::exists(sf->db))
      throw Error("--resume", "no store " + sf->db + " here to resume from");
    // Every input is read and checked before the store is created, so a
    // refused command leaves no store behind.
    if (!sf->devices.empty()) parse_devices(sf->devices);
    if (std::error_code ec; !sf->out.empty() && std::filesystem::exists(sf->out, ec) &&
                            !std::filesystem::is_directory(sf->out, ec))
      throw Error("--out " + sf->out, "is a file, not a folder for the export");
    ExperimentConfig cfg;
    cfg.recipe = recipe.to_json();
    cfg.fidelity = sf->fidelity;
    cfg.gpus_per_trial = per_trial;
    cfg.budget_trials = sf->trials;
    cfg.seed = sf->seed;
    const StrategySettings settings = sf->strategy.settings(*sr, sf->seed);
    cfg.strategy_settings = settings.to_json();
    cfg.objective = settings.objective;
    cfg.asha = sf->strategy.asha_settings(
        *sr, sf->fidelity > 0 ? sf->fidelity : static_cast<int>(recipe.epochs));
    const auto strategy = make_strategy(space, settings);
    cfg.data = sf->data;
    cfg.data_fingerprint = data::load_dataset(sf->data).train.fingerprint();
    db::Store store = db::Store::open(sf->db);
    cfg.name = sf->name.empty() ? default_experiment_name("search") : sf->name;
    if (sf->resume && sf->name.empty()) {  // the store's latest experiment
      const auto all = store.experiments();
      if (all.empty()) throw Error("--resume", sf->db + " holds no experiment");
      cfg.name = all.back().name;
    }
    // A resumed experiment has spent part of the budget already.
    double spent = 0;
    if (auto e = store.find_experiment(cfg.name)) spent = e->seconds_run;
    cfg.budget_seconds =
        std::max(1.0, (sf->no_final ? budget : budget * (1 - sf->final_share)) - spent);
    if (spent > 0)
      log_line("search", "experiment '" + cfg.name + "' has run " +
                             std::to_string(static_cast<int>(spent)) + " s of its budget");
    const auto run_started = std::chrono::steady_clock::now();
    LocalPool pool;
    pool.workers = workers;
    pool.threads = threads;
    pool.per_trial = per_trial;
    pool.devices = sf->devices;
    const ControllerSummary s = run_local_search(store, space, *strategy, cfg, pool);
    nlohmann::json summary = {{"experiment", cfg.name}, {"done", s.done},
                              {"failed", s.failed},     {"pruned", s.pruned},
                              {"rejected", s.rejected}, {"stopped", s.stopped}};
    if (s.stopped && stop_requested()) {
      std::printf("%s\n", summary.dump().c_str());
      log_line("search", "stopped; continue with: minas search --resume --db " + sf->db +
                             " --name " + cfg.name);
      return;
    }
    if (!sf->no_final) {
      FinalOptions fo;
      fo.db = sf->db;
      fo.experiment = cfg.name;
      fo.data = sf->data;
      fo.out = sf->out.empty() ? "runs/" + cfg.name : sf->out;
      fo.recipe = recipe;
      fo.recipe.set("epochs", std::to_string(sf->final_epochs), "final training");
      // What the search left of the budget is the final training's, less
      // what its evaluation and export take (measured by retrain_and_export).
      const double left =
          budget - spent -
          std::chrono::duration<double>(std::chrono::steady_clock::now() - run_started).count();
      fo.deadline = std::chrono::steady_clock::now() +
                    std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                        std::chrono::duration<double>(left));
      fo.recipe.set("threads", std::to_string(cores), "final training");
      // An experiment file's fields set the options, so they are in the line;
      // --experiment itself stays for what only a file holds (strategy
      // settings, objective, asha).
      fo.reproduce =
          reproduce_line(*sr, "minas search", {"resume", "params-markdown"}, sf->seed, sf->budget);
      log_line("search", "final training, evaluation and export of the best architecture in the " +
                             std::to_string(static_cast<int>(std::max(kMinFinalSeconds, left))) +
                             " s left");
      const FinalResult fr = retrain_and_export(space, fo);
      summary["arch"] = fr.arch;
      summary["test_acc"] = fr.test_acc;
      summary["params"] = fr.params;
      summary["macs"] = fr.macs;
      summary["out"] = fr.out;
      char acc[32];
      std::snprintf(acc, sizeof acc, "%.2f%%", 100 * fr.test_acc);
      log_line("search", "exported to " + fr.out + ": test accuracy " + acc + ", " +
                             std::to_string(fr.params) + " parameters");
    }
    std::printf("%s\n", summary.dump().c_str());
  });

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
  wk->callback([w] {
    WorkerOptions opt;
    opt.connect = w->connect;
    opt.slots = parse_devices(w->devices);
    opt.name = w->name;
    if (w->pool.empty()) throw Error("worker --pool", "a pool needs a name");
    opt.pool = w->pool;
    opt.advertise = w->advertise;
    for (const std::string& t : w->tags) {
      const size_t eq = t.find('=');
      if (eq == std::string::npos || eq == 0)
        throw Error("worker --tag " + t, "a tag is KEY=VALUE, e.g. --tag gpu=h100");
      opt.tags[t.substr(0, eq)] = t.substr(eq + 1);
    }
    if (w->trainer == "sim") {
      if (w->table.empty() || w->metric.empty())
        throw Error("worker --trainer sim", "needs --table CSV and --metric COLUMN");
      opt.runner = make_sim_runner(w->table, w->metric, w->delay);
    } else {
#ifndef MINAS_WITH_CUDA
      for (const auto& s : opt.slots)
        if (s.id.rfind("cuda", 0) == 0)
          throw Error("worker --devices " + w->devices,
                      "this build has no GPU backend (CUDA, cuDNN or NCCL were not found when it "
                      "was configured)");
#endif
      opt.runner = make_cpu_runner();
    }
    opt.log = [name = w->name](const std::string& l) {
      log_line(name.empty() ? "worker" : name, l);
    };
    if (w->key.empty() != w->server_key.empty())
      throw Error("worker", "CURVE needs both --key and --server-key");
    if (!w->key.empty()) {
      opt.curve_key = auth::read_keypair(w->key);
      opt.server_public_key = auth::read_public_key(w->server_key);
    }
    Worker worker(opt);
    StopTarget target(&worker);
    install_stop_signals();
    worker.run();
  });
}

}  // namespace minas::cli
