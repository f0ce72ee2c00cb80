#include "cli/final_flags.h"

#include "cli/flag_ranges.h"

namespace minas::cli {
namespace {

constexpr int kMaxFinalEpochs = 100000;

}  // namespace

void FinalFlags::add(CLI::App* app, const std::string& among) {
  app->add_option("--final-share", share, "Share of the budget kept for the final training")
      ->default_val(0.3)
      ->check(in_range(0.05, 0.95));
  app->add_option("--final-epochs", epochs,
                  "Epochs of the final training (at most; it also ends with its share of the "
                  "budget)")
      ->default_val(30)
      ->check(in_range(1, kMaxFinalEpochs));
  app->add_option("--final-pick", pick,
                  "How the final training's architecture is chosen" + among +
                      ": validation (the best by validation accuracy) or final-time (of 8 "
                      "shortlisted by their trials' speed, the one predicted best after the "
                      "epochs its measured speed affords in the final training's time)")
      ->default_val("validation")
      ->check(CLI::IsMember({"validation", "final-time"}));
  app->add_option("--curve-exponent", curve_exponent,
                  "final-time: a in err(E) = err(F) x (E / F)^-a, the learning curve that "
                  "predicts accuracy after E epochs from a trial's after F; 0: as measured for "
                  "trials of F epochs (0.237 at a quarter epoch, 0.07 at 3 epochs)")
      ->default_val(0)
      ->check(in_range(0.0, 2.0));
}

}  // namespace minas::cli
