// `minas keygen`: a CURVE key pair for the controller or a worker (controller/auth.h).
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "controller/auth.h"

namespace minas::cli {
namespace {

struct KeygenFlags {
  std::string out;
  std::string name = "minas";
};

void run(const KeygenFlags& f) {
  const auth::KeyPair keys = auth::write_keypair(f.out, f.name);
  const std::string base = (std::filesystem::path(f.out) / f.name).string();
  std::printf("public key: %s\n", keys.public_key.c_str());
  std::printf("wrote %s.key (the key pair, mode 0600: keep it on this host)\n", base.c_str());
  std::printf("wrote %s.pub (the public key: give it to the peers)\n", base.c_str());
}

}  // namespace

void add_keygen_command(CLI::App& app) {
  auto f = std::make_shared<KeygenFlags>();
  CLI::App* c =
      app.add_subcommand("keygen", "Make a CURVE key pair: NAME.key (secret) and NAME.pub");
  c->add_option("--out", f->out, "Folder for the key files (created if missing)")->required();
  c->add_option("--name", f->name, "File name of the pair, e.g. controller or the worker's host")
      ->capture_default_str();
  c->footer(
      "The controller gets its own pair and an allow-list of worker public keys (a file of\n"
      "NAME.pub lines, or a folder of NAME.pub files); each worker gets its own pair and the\n"
      "controller's NAME.pub. A NAME.key never leaves its host. Existing files are never\n"
      "overwritten.");
  c->callback([f] { run(*f); });
}

}  // namespace minas::cli
