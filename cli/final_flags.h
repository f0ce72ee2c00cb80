#pragma once
// The final training's flags, which `minas search` and `minas adapt` share:
// its share of the budget, its epochs, how its architecture is chosen and the
// learning curve that choice predicts with.
#include <string>

#include <CLI/CLI.hpp>

#include "pipeline/final_choice.h"

namespace minas::cli {

struct FinalFlags {
  double share = 0.3;
  int epochs = 30;
  std::string pick = "validation";
  double curve_exponent = 0;

  // Declares --final-share, --final-epochs, --final-pick and
  // --curve-exponent on `app`; `among` says, in --final-pick's help, which
  // trials the choice is among ("" for all).
  void add(CLI::App* app, const std::string& among = "");

  // Copies the settings into a command's options (pipeline::SearchOptions,
  // pipeline::AdaptOptions).
  template <class Options>
  void apply(Options& o) const {
    o.final_share = share;
    o.final_epochs = epochs;
    o.final_pick = pipeline::parse_final_pick(pick);
    o.curve_exponent = curve_exponent;
  }
};

}  // namespace minas::cli
