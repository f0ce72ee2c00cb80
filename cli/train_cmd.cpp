// `minas train` and `minas bench train-ref`: train one network on real data.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "cli/flag_ranges.h"
#include "searchspace/error.h"
#include "searchspace/space.h"
#include "trainer/backends.h"
#include "trainer/checkpoint.h"
#include "trainer/train.h"

#include <dnnl.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace minas::cli {
namespace {

struct TrainFlags {
  std::string space = "small", arch, data = "fashion-mnist", recipe, out, device = "cpu", precision;
  std::vector<std::string> sets;
  int64_t epochs = -1, batch = -1, threads = -1;
  double budget = -1;
  int width = 16;
  double target = 0;
};

Recipe make_recipe(const TrainFlags& f) {
  Recipe r = f.recipe.empty() ? Recipe() : Recipe::load(f.recipe);
  const std::string origin = "command line";
  if (f.epochs >= 0) r.set("epochs", std::to_string(f.epochs), origin);
  if (f.budget >= 0) r.set("time_budget_s", std::to_string(f.budget), origin);
  if (f.batch >= 0) r.set("batch", std::to_string(f.batch), origin);
  if (f.threads >= 0) r.set("threads", std::to_string(f.threads), origin);
  if (!f.precision.empty()) r.set("precision", f.precision, origin);
  for (const std::string& kv : f.sets) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos)
      throw Error("--set " + printable_excerpt(kv, 40), "expected NAME=VALUE");
    r.set(kv.substr(0, eq), kv.substr(eq + 1), origin);
  }
  r.validate(origin);
  return r;
}

void print_epoch(const EpochRecord& e, int64_t epochs) {
  char line[256];
  std::snprintf(line, sizeof line,
                "epoch %d%s  loss %.4f  train_acc %.4f  val_acc %s  lr %.4f  %.1fs  %.0f img/s\n",
                e.epoch, epochs > 0 ? ("/" + std::to_string(epochs)).c_str() : "", e.train_loss,
                e.train_acc,
                std::isnan(e.val_acc) ? "-" : std::to_string(e.val_acc).substr(0, 6).c_str(), e.lr,
                e.seconds, e.img_per_s);
  std::fputs(line, stdout);
  std::fflush(stdout);
}

// The reference network of shared/bench/torch_ref.py at width w:
// conv3x3(1->w) BN ReLU maxpool2, conv3x3(w->2w) BN ReLU maxpool2,
// conv3x3(2w->4w) BN ReLU, global average pool, linear(4w->10).
LayerGraph reference_network(int w) {
  if (w < 1 || w > 1024) throw Error("--width", "must be in [1, 1024], got " + std::to_string(w));
  LayerGraph g({1, 28, 28}, 10);
  int x = 0;
  for (int k = 0; k < 3; ++k) {
    const std::string n = "conv" + std::to_string(k + 1);
    x = g.conv(x, w << k, 3, 1, 1, false, n);
    x = g.batchnorm(x, n + ".bn");
    x = g.activation(Op::Relu, x, n + ".relu");
    if (k < 2) x = g.maxpool(x, 2, 2, 0, n + ".pool");
  }
  x = g.global_avgpool(x, "pool");
  g.linear(x, 10, true, "fc");
  return g;
}

}  // namespace

void add_train_commands(CLI::App& app) {
  auto f = std::make_shared<TrainFlags>();
  CLI::App* c = app.add_subcommand("train", "Train one architecture on a data set and evaluate it");
  c->add_option("--space", f->space, "Search space (name or file, with overrides)")
      ->default_val("small");
  c->add_option("--arch", f->arch, "Canonical key of the architecture")->required();
  c->add_option("--data", f->data, "fashion-mnist, mnist, or a folder of IDX files")
      ->default_val("fashion-mnist");
  c->add_option("--epochs", f->epochs, "Epochs (overrides the recipe)")
      ->check(recipe_check("epochs"));
  c->add_option("--budget", f->budget, "Time budget in seconds (overrides the recipe)")
      ->check(recipe_check("time_budget_s"));
  c->add_option("--batch", f->batch, "Batch size (overrides the recipe)")
      ->check(recipe_check("batch"));
  c->add_option("--threads", f->threads, "CPU threads, 0 for all (overrides the recipe)")
      ->check(recipe_check("threads"));
  c->add_option("--device", f->device, "cpu or cuda:N (builds with the GPU backend)")
      ->default_val("cpu");
  c->add_option("--precision", f->precision, "fp32, bf16 or fp16 (GPU; overrides the recipe)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  c->add_option("--recipe", f->recipe, "Training recipe, JSON (docs/recipe.md)");
  c->add_option("--set", f->sets, "Recipe field NAME=VALUE, repeatable");
  c->add_option("--out", f->out, "Folder for the checkpoint and the report");
  c->callback([f] {
    // Refused before the training, not after it.
    if (std::error_code ec; !f->out.empty() && std::filesystem::exists(f->out, ec) &&
                            !std::filesystem::is_directory(f->out, ec))
      throw Error("--out " + f->out, "is a file, not a folder");
    const Space space = Space::load(f->space);
    const Arch arch = space.parse_key(f->arch);
    const Recipe recipe = make_recipe(*f);
    const auto data = data::load_dataset(f->data);
    Model model(space.lower(arch), recipe.seed);
    auto backend = make_backend(f->device, static_cast<int>(recipe.threads));
    std::printf("train %s on %s (%s): %lld params, %lld MACs, %d threads\n",
                space.key(arch).c_str(), f->data.c_str(), data.train.fingerprint().c_str(),
                static_cast<long long>(model.parameter_count()),
                static_cast<long long>(model.graph().macs()), backend->threads());
    TrainOptions opt;
    opt.on_epoch = [&](const EpochRecord& e) { print_epoch(e, recipe.epochs); };
    const TrainReport report = train(model, recipe, data, *backend, opt);
    nlohmann::json j = report.to_json();
    if (!f->out.empty()) {
      std::filesystem::create_directories(f->out);
      const std::string ckpt = (std::filesystem::path(f->out) / "model.ckpt").string();
      CheckpointMeta meta{space.name(),
                          space.key(arch),
                          {{"recipe", recipe.to_json()},
                           {"space_ref", space.ref()},
                           {"data", f->data},
                           {"data_fingerprint", data.train.fingerprint()},
                           {"val_acc", j["val_acc"]},
                           {"test_acc", j["test_acc"]}}};
      save_checkpoint(ckpt, meta, checkpoint_views(model));
      nlohmann::json full = j;
      full["arch"] = space.arch_to_json(arch);
      full["recipe"] = recipe.to_json();
      full["checkpoint"] = ckpt;
      std::ofstream(std::filesystem::path(f->out) / "report.json") << full.dump(2) << '\n';
      j["checkpoint"] = ckpt;
    }
    j.erase("epochs");
    std::printf("%s\n", j.dump().c_str());
  });
}

void add_train_benchmarks(CLI::App& bench_group) {
  auto f = std::make_shared<TrainFlags>();
  CLI::App* bench = &bench_group;
  CLI::App* ref = bench->add_subcommand(
      "train-ref", "Train shared/bench/torch_ref.py's reference network with its recipe");
  ref->add_option("--width", f->width, "Width w of the reference network")
      ->default_val(16)
      ->check(in_range(1, 1024));
  ref->add_option("--epochs", f->epochs, "Epochs")->default_val(1)->check(recipe_check("epochs"));
  ref->add_option("--threads", f->threads, "CPU threads")
      ->default_val(2)
      ->check(recipe_check("threads"));
  ref->add_option("--batch", f->batch, "Batch size")
      ->default_val(128)
      ->check(recipe_check("batch"));
  ref->add_option("--data", f->data, "Data set")->default_val("fashion-mnist");
  ref->add_option("--device", f->device, "cpu or cuda:N (builds with the GPU backend)")
      ->default_val("cpu");
  ref->add_option("--precision", f->precision, "fp32, bf16 or fp16 (GPU)")
      ->default_val("fp32")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  ref->add_option("--target", f->target,
                  "Test accuracy to time: evaluated after every epoch (not timed), the training "
                  "seconds until it is first reached are printed")
      ->check(in_range(0.0, 1.0));
  ref->callback([f] {
    // torch_ref.py's recipe is our default recipe, trained on all 60,000 images.
    Recipe recipe;
    recipe.set("val_size", "0", "train-ref");
    recipe.set("epochs", std::to_string(f->epochs), "train-ref");
    recipe.set("threads", std::to_string(f->threads), "train-ref");
    recipe.set("batch", std::to_string(f->batch), "train-ref");
    recipe.set("precision", f->precision.empty() ? "fp32" : f->precision, "train-ref");
    recipe.validate("train-ref");
    const auto data = data::load_dataset(f->data);
    Model model(reference_network(f->width), recipe.seed);
    auto backend = make_backend(f->device, static_cast<int>(recipe.threads));
    TrainOptions opt;
    opt.measure_latency = false;
    double trained = 0, reached = -1;
    opt.on_epoch = [&](const EpochRecord& e) {
      print_epoch(e, recipe.epochs);
      trained += e.seconds;
      if (f->target <= 0 || reached >= 0) return;
      const double acc = evaluate(model, *backend, data.test, data::all_indices(data.test),
                                  data::Normalization::fashion_mnist(), 500);
      std::printf("epoch %d test_acc=%.4f train_s=%.2f\n", e.epoch, acc, trained);
      if (acc >= f->target) reached = trained;
    };
    const TrainReport r = train(model, recipe, data, *backend, opt);
    if (f->target > 0) {
      if (reached >= 0)
        std::printf("target=%.4f train_s_to_target=%.2f\n", f->target, reached);
      else
        std::printf("target=%.4f not reached in %lld epochs\n", f->target,
                    static_cast<long long>(recipe.epochs));
    }
    // A training step runs each conv and linear layer three times (forward,
    // backward data, backward weights), 2 FLOPs per multiply-accumulate.
    const double gflops = r.img_per_s * 6.0 * static_cast<double>(r.macs) / 1e9;
    std::printf(
        "minas device=%s precision=%s threads=%d width=%d params=%lld macs=%lld epochs=%lld "
        "train_s=%.2f train_gflops=%.1f\n",
        backend->name().c_str(), f->precision.empty() ? "fp32" : f->precision.c_str(),
        backend->threads(), f->width, static_cast<long long>(r.params),
        static_cast<long long>(r.macs), static_cast<long long>(recipe.epochs), r.train_seconds,
        gflops);
    std::printf("img_per_s=%.0f test_acc=%.4f\n", r.img_per_s, r.test_acc);
  });

  auto gemm = std::make_shared<std::pair<int, int>>(2, 2048);
  CLI::App* g = bench->add_subcommand(
      "gemm",
      "Single-precision GEMM throughput of this machine (oneDNN sgemm): the peak to compare with");
  g->add_option("--threads", gemm->first, "CPU threads")->default_val(2)->check(in_range(1, 4096));
  g->add_option("--n", gemm->second, "Square matrix size")
      ->default_val(2048)
      ->check(in_range(16, 16384));
  g->callback([gemm] {
    const int threads = gemm->first;
    const dnnl_dim_t n = gemm->second;
    if (threads < 1 || n < 16 || n > 16384)
      throw Error("bench gemm", "need threads >= 1, 16 <= n <= 16384");
    omp_set_num_threads(threads);
    std::vector<float> a(static_cast<size_t>(n * n), 1.0f), b(a.size(), 0.5f), c(a.size());
    auto run = [&] {
      const dnnl_status_t st =
          dnnl_sgemm('N', 'N', n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
      if (st != dnnl_success)
        throw Error("bench gemm", "dnnl_sgemm failed with status " + std::to_string(st));
    };
    run();
    std::vector<double> secs;
    for (int i = 0; i < 7; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      run();
      secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(secs.begin(), secs.end());
    const double flops =
        2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n);
    std::printf("sgemm n=%lld threads=%d best=%.1f GFLOP/s median=%.1f GFLOP/s\n",
                static_cast<long long>(n), threads, flops / secs.front() / 1e9,
                flops / secs[3] / 1e9);
    std::printf("gemm_gflops=%.1f\n", flops / secs.front() / 1e9);
  });
}

}  // namespace minas::cli
