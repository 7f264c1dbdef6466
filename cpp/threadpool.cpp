#include "threadpool.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <string>
#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>
#define PHIRT_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define PHIRT_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define PHIRT_CPU_RELAX() ((void)0)
#endif

namespace phirt {

namespace {
// ~100 µs of pause instructions before a worker sleeps: long enough to catch the next kernel of a
// forward pass, short enough not to steal a core from a descheduled peer on a busy machine.
constexpr int kSpinIterations = 4000;
constexpr int kCallerSpins = 200;  // then the caller yields its core to late workers
constexpr int kMaxThreads = 256;
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
    start_workers(n_threads);
}

ThreadPool::~ThreadPool() {
    stop_workers();
}

void ThreadPool::start_workers(int n_threads) {
    // New workers start from the current generation so they do not run a finished job.
    const uint64_t seen = generation_.load(std::memory_order_acquire);
    for (int i = 1; i < n_threads; ++i)
        workers_.emplace_back(&ThreadPool::worker_loop, this, i, seen);
    size_.store((int)workers_.size() + 1, std::memory_order_release);
}

void ThreadPool::stop_workers() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_.store(true);
        generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto &t : workers_) t.join();
    workers_.clear();
    stop_.store(false);
}

void ThreadPool::resize(int n_threads) {
    std::lock_guard<std::mutex> serial(run_mutex_);
    stop_workers();
    start_workers(n_threads);
}

// state_ packs [epoch:16 | n_tasks:24 | next task:24]. A task is claimed by a CAS on the whole
// word, so a worker that wakes late can only claim tasks of the run now published (the epoch
// defeats ABA between runs with equal counts), and the caller never waits for a worker that has
// not started: it returns once every task is done, by whoever ran it.
namespace {
constexpr int kFieldBits = 24;
constexpr uint64_t kFieldMask = (uint64_t(1) << kFieldBits) - 1;
constexpr int64_t kMaxTasksPerRound = (int64_t)kFieldMask;
}  // namespace

void ThreadPool::drain(int thread_index) {
    for (;;) {
        uint64_t v = state_.load(std::memory_order_acquire);
        uint64_t task;
        do {
            task = v & kFieldMask;
            if (task >= ((v >> kFieldBits) & kFieldMask)) return;
        } while (!state_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel,
                                               std::memory_order_acquire));
        (*fn_)(task_base_ + (int64_t)task, thread_index);
        done_.fetch_add(1, std::memory_order_release);
    }
}

void ThreadPool::run(int64_t n_tasks, const std::function<void(int64_t, int)> &fn) {
    if (n_tasks <= 0) return;
    std::lock_guard<std::mutex> serial(run_mutex_);
    if (workers_.empty() || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; ++t) fn(t, 0);
        return;
    }
    fn_ = &fn;
    for (int64_t base = 0; base < n_tasks; base += kMaxTasksPerRound) {
        const int64_t count = std::min(kMaxTasksPerRound, n_tasks - base);
        task_base_ = base;
        done_.store(0, std::memory_order_relaxed);
        epoch_ = (epoch_ + 1) & 0xFFFF;
        state_.store((epoch_ << (2 * kFieldBits)) | ((uint64_t)count << kFieldBits),
                     std::memory_order_release);
        generation_.fetch_add(1, std::memory_order_release);
        if (sleeping_.load(std::memory_order_acquire) > 0) {
            std::lock_guard<std::mutex> lock(mutex_);
            wake_.notify_all();
        }
        drain(0);
        for (int spins = 0; done_.load(std::memory_order_acquire) != count; ++spins) {
            if (spins < kCallerSpins)
                PHIRT_CPU_RELAX();
            else
                std::this_thread::yield();
        }
    }
    fn_ = nullptr;
}

void ThreadPool::worker_loop(int index, uint64_t seen) {
    for (;;) {
        int spins = 0;
        uint64_t gen;
        while ((gen = generation_.load(std::memory_order_acquire)) == seen) {
            if (++spins < kSpinIterations) {
                PHIRT_CPU_RELAX();
                continue;
            }
            std::unique_lock<std::mutex> lock(mutex_);
            sleeping_.fetch_add(1, std::memory_order_acq_rel);
            wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
            sleeping_.fetch_sub(1, std::memory_order_acq_rel);
            spins = 0;
        }
        seen = gen;
        if (stop_.load()) return;
        drain(index);
    }
}

int physical_cores() {
    // Distinct (package, core) pairs from sysfs; hyperthread siblings share a core id.
    std::set<std::pair<std::string, std::string>> cores;
    const int logical = (int)std::thread::hardware_concurrency();
    for (int cpu = 0; cpu < logical; ++cpu) {
        const std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
        std::ifstream pkg(base + "physical_package_id"), core(base + "core_id");
        std::string p, c;
        if (!(pkg >> p) || !(core >> c)) return logical > 0 ? logical : 1;
        cores.emplace(p, c);
    }
    return cores.empty() ? (logical > 0 ? logical : 1) : (int)cores.size();
}

namespace {
thread_local ThreadPool *t_installed = nullptr;

ThreadPool &default_pool() {
    // Leaked on purpose: workers must not be joined during interpreter shutdown.
    static ThreadPool *pool = new ThreadPool(physical_cores());
    return *pool;
}
}  // namespace

ThreadPool &global_pool() {
    ThreadPool *pool = t_installed;
    return pool != nullptr ? *pool : default_pool();
}

ThreadPool *installed_pool() {
    return t_installed;
}

ThreadPool *install_pool(ThreadPool *pool) {
    ThreadPool *previous = t_installed;
    t_installed = pool;
    return previous;
}

PoolScope::PoolScope(ThreadPool *pool) : previous_(install_pool(pool)) {}

PoolScope::~PoolScope() {
    install_pool(previous_);
}

int clamp_threads(int n) {
    return std::min(std::max(n, 1), kMaxThreads);
}

void set_num_threads(int n) {
    n = clamp_threads(n);
    ThreadPool &pool = default_pool();
    if (pool.size() != n) pool.resize(n);
}

int get_num_threads() {
    return global_pool().size();
}

}  // namespace phirt
