// A persistent worker pool: threads are created once; each run() hands out task indices from an
// atomic counter. Workers spin briefly before sleeping, because the engine issues hundreds of
// short kernels per token and a futex wake per kernel would cost more than the kernel.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace phirt {

class ThreadPool {
   public:
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool &) = delete;
    ThreadPool &operator=(const ThreadPool &) = delete;

    // Total threads including the caller.
    int size() const { return size_.load(std::memory_order_acquire); }

    // Replaces the workers with n - 1 new ones; waits for a run in progress to finish first.
    void resize(int n_threads);

    // Calls fn(task, thread_index) for task in [0, n_tasks); the caller takes part and returns
    // when every task is done. Not re-entrant.
    void run(int64_t n_tasks, const std::function<void(int64_t, int)> &fn);

   private:
    void worker_loop(int index, uint64_t seen);
    void start_workers(int n_threads);
    void stop_workers();
    void drain(int thread_index);

    std::vector<std::thread> workers_;
    std::mutex run_mutex_;  // serialises callers from different Python threads
    std::mutex mutex_;
    std::condition_variable wake_;
    std::atomic<uint64_t> generation_{0};
    std::atomic<uint64_t> state_{0};  // epoch, task count and next task of the current run
    std::atomic<int64_t> done_{0};    // tasks of the current run finished
    uint64_t epoch_ = 0;
    int64_t task_base_ = 0;  // index of the current round's first task (runs over 2^24 tasks)
    std::atomic<int> sleeping_{0};
    std::atomic<bool> stop_{false};
    std::atomic<int> size_{1};
    const std::function<void(int64_t, int)> *fn_ = nullptr;
};

// Physical cores of this machine (falls back to logical CPUs).
int physical_cores();

// The pool the calling thread's kernels run on: the one a PoolScope installed on this thread,
// else the process-wide default pool (never destroyed). Two models in one process each keep their
// own thread count by running their kernels inside a scope of their own pool.
ThreadPool &global_pool();

// Installs `pool` as the calling thread's pool for the scope's lifetime (nullptr: the default);
// scopes nest. The caller keeps the pool alive while the scope lasts.
class PoolScope {
   public:
    explicit PoolScope(ThreadPool *pool);
    ~PoolScope();
    PoolScope(const PoolScope &) = delete;
    PoolScope &operator=(const PoolScope &) = delete;

   private:
    ThreadPool *previous_;
};

// The calling thread's installed pool (nullptr when it uses the default), and a setter that
// returns the previous one: what PoolScope does, for callers whose scope is not a C++ block.
ThreadPool *installed_pool();
ThreadPool *install_pool(ThreadPool *pool);

// The default pool's size (set_num_threads is safe while other threads run kernels), and the
// calling thread's current pool size (get_num_threads).
void set_num_threads(int n);
int get_num_threads();
int clamp_threads(int n);  // n within [1, 256]

}  // namespace phirt
