// The engine's thread pool for the short, frequent parallel steps of generation (one GEMV per
// matrix, attention over heads): about 150 per token of a 1B model, each 10-200 microseconds.
//
// Why not OpenMP for these: libgomp makes waiting threads either sleep at once (passive: a futex
// wake-up per region, which cost qforge generate 30% of its tokens/s on 2 cores) or spin for
// milliseconds (its default: when another process shares the cores, a spinning thread holds the core
// the thread it waits for needs, and two 2-thread generate processes fell from 28 to 5 tok/s each).
// Here a waiting thread spins briefly, then yields its core to anything else runnable while it keeps
// polling, and only sleeps after a long idle gap (between prompts, say). OpenMP keeps the long
// prompt-processing regions, where a wake-up is noise.
#pragma once
#include <cstdint>
#include <type_traits>
#include <utility>

namespace qforge {

namespace detail {
using PoolTask = void (*)(void* ctx, int index, int count);
void pool_run(int n_threads, PoolTask task, void* ctx);
}  // namespace detail

// Calls fn(i, n) once for each i in [0, n), on n threads (the caller runs i = 0), and returns when
// all calls have returned. n <= 1, or a call from inside fn, runs everything on the calling thread.
// fn must not throw.
template <typename F>
void parallel_run(int n_threads, F&& fn) {
  using Fn = std::remove_reference_t<F>;
  detail::pool_run(
      n_threads, [](void* ctx, int i, int n) { (*static_cast<Fn*>(ctx))(i, n); },
      const_cast<void*>(static_cast<const void*>(&fn)));
}

}  // namespace qforge
