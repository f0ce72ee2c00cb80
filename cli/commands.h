#pragma once
// Each command group of the `minas` binary registers its subcommands here.
#include <CLI/CLI.hpp>

namespace minas::cli {

void add_space_commands(CLI::App& app);
void add_train_commands(CLI::App& app);         // train
void add_train_benchmarks(CLI::App& bench);     // bench train-ref, bench gemm
void add_store_benchmarks(CLI::App& bench);     // bench store
void add_dispatch_benchmark(CLI::App& bench);   // bench dispatch
void add_strategy_benchmark(CLI::App& bench);   // bench strategies
void add_predictor_benchmark(CLI::App& bench);  // bench predictor
void add_table_benchmark(CLI::App& bench);      // bench table
void add_evaluator_benchmark(CLI::App& bench);  // bench evaluators, bench screen
void add_inherit_benchmark(CLI::App& bench);    // bench inherit
void add_adapt_benchmark(CLI::App& bench);      // bench adapt-data
void add_dashboard_benchmark(CLI::App& bench);  // bench dashboard
void add_query_commands(CLI::App& app);         // query, sql
void add_keygen_command(CLI::App& app);         // keygen
void add_search_commands(CLI::App& app);        // controller, worker
void add_predict_command(CLI::App& app);        // predict
void add_adapt_command(CLI::App& app);          // adapt
void add_dashboard_command(CLI::App& app);      // dashboard

}  // namespace minas::cli
