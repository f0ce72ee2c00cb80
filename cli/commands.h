#pragma once
// Each command group of the `minas` binary registers its subcommands here.
#include <CLI/CLI.hpp>

namespace minas::cli {

void add_space_commands(CLI::App& app);
void add_train_commands(CLI::App& app);  // train, bench

}  // namespace minas::cli
