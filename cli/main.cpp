// minas: neural architecture search with minute-level training.
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "searchspace/error.h"

int main(int argc, char** argv) {
  CLI::App app{"minas: neural architecture search with minute-level training"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "minas 0.1.0");
  minas::cli::add_space_commands(app);
  minas::cli::add_train_commands(app);
  minas::cli::add_query_commands(app);
  minas::cli::add_keygen_command(app);
  minas::cli::add_search_commands(app);
  minas::cli::add_predict_command(app);
  minas::cli::add_adapt_command(app);
  minas::cli::add_dashboard_command(app);
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks (bench/README.md)");
  bench->require_subcommand(1);
  minas::cli::add_train_benchmarks(*bench);
  minas::cli::add_store_benchmarks(*bench);
  minas::cli::add_dispatch_benchmark(*bench);
  minas::cli::add_strategy_benchmark(*bench);
  minas::cli::add_adapt_benchmark(*bench);
  minas::cli::add_dashboard_benchmark(*bench);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const minas::Error& e) {
    std::fprintf(stderr, "minas: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "minas: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
