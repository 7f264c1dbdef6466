// A one-line explanation before a SIGBUS ends the process. Model weights are read straight from
// a read-only memory map of the file; if the file is truncated while mapped (rewritten in place,
// a storage error), reading a page past its new end raises SIGBUS, which no runtime that maps
// files can turn into an exception. The engine checks the file between calls (engine.py); this
// covers a change in the middle of one. The handler writes its note, puts back the handler that
// was there before (Python's faulthandler, or the default), and returns: the faulting read runs
// again and that handler ends the process as it would have.
#include <signal.h>
#include <unistd.h>

#include <atomic>

namespace phirt {

namespace {

struct sigaction g_previous;
std::atomic<bool> g_installed{false};

void on_sigbus(int, siginfo_t *, void *) {
    static const char note[] =
        "phirt: SIGBUS reading memory-mapped data: a model file was truncated or could not be "
        "read while loaded (do not rewrite model files in use; load the model again)\n";
    ssize_t ignored = write(STDERR_FILENO, note, sizeof note - 1);
    (void)ignored;
    sigaction(SIGBUS, &g_previous, nullptr);
}

}  // namespace

// Installs the note once per process (later calls do nothing). Returns whether it is installed.
bool install_sigbus_note() {
    if (g_installed.exchange(true)) return true;
    struct sigaction action {};
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGBUS, &action, &g_previous) != 0) {
        g_installed = false;
        return false;
    }
    return true;
}

}  // namespace phirt
