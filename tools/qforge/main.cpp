// qforge: quantize transformer models and run them on the CPU. Thin CLI over libqforge.

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "commands.h"
#include "qforge/error.h"
#include "qforge/sysinfo.h"

namespace qforge::cli {

namespace {
std::vector<std::pair<CLI::App*, Runner>>& registry() {
  static std::vector<std::pair<CLI::App*, Runner>> r;
  return r;
}
}  // namespace

void add_command(CLI::App& app, CLI::App* sub, Runner run) { registry().emplace_back(sub, std::move(run)); }

}  // namespace qforge::cli

int main(int argc, char** argv) {
  using namespace qforge;
  // OpenMP threads must not spin between the prompt's regions and generation's steps (see there).
  prefer_passive_openmp(argv);
  CLI::App app{
      "qforge: load Hugging Face transformer models, run them on the CPU and measure them.\n"
      "Run 'qforge COMMAND --help' for the options of each command."};
  app.require_subcommand(1);
  app.fallthrough(false);
  cli::register_inspect(app);
  cli::register_generate(app);
  cli::register_perplexity(app);
  cli::register_quantize(app);
  cli::register_imatrix(app);
  cli::register_synth(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);  // prints the message
    return 2;     // bad flags are bad input
  }
  for (auto& [sub, run] : cli::registry()) {
    if (!sub->parsed()) continue;
    try {
      return run();
    } catch (const Error& e) {
      std::fflush(stdout);
      std::fprintf(stderr, "qforge %s: error: %s\n", sub->get_name().c_str(), e.what());
      return e.exit_code();
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr, "qforge %s: error: out of memory\n", sub->get_name().c_str());
      return 3;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "qforge %s: internal error: %s\n", sub->get_name().c_str(), e.what());
      return 70;
    }
  }
  return 2;
}
