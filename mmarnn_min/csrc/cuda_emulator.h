// A small emulation of CUDA's execution model on the CPU: it runs this package's CUDA kernels
// (routing_kernels.cuh), unchanged, with an ordinary C++ compiler, and catches the mistakes that
// a GPU hides or turns into wrong numbers once in a while.
//
// How it is tested and where it stands. tests/test_cuda_emulator.py runs the self-test program
// (emulator_selftest.cpp) built plainly, under ThreadSanitizer and under AddressSanitizer +
// UndefinedBehaviorSanitizer, and builds copies of the kernels with a bug planted (a barrier
// removed, padding read, a shared array overrun) that it must report. The operator's whole law
// suite runs through it on every commit (backend "cuda_emulator" in tests/test_routing.py).
// It has run on x86-64 Linux with GCC; it does not need a GPU, and says nothing about speed.
//
// What it emulates (the parts of CUDA the kernels use):
//   * launch(): the blocks of the grid run one after another; the threads of a block are real
//     OS threads (a pool reused from block to block), so a thread sanitizer sees them.
//   * threadIdx, blockIdx, blockDim, gridDim: per-thread values, as in CUDA.
//   * __syncthreads(): a barrier that fails the launch when the threads of a block wait at
//     different barriers (divergence), or when a barrier is reached after some threads of the
//     block returned (those never arrive: a hang or undefined behaviour on a GPU).
//   * dynamic shared memory (dynamic_shared_array): one buffer per block, its bytes set to 0xFF
//     before each block (NaN in every floating type, -1 in integers); every access is checked
//     against the size the launch asked for, and between two barriers the emulator checks the
//     accesses as compute-sanitizer's racecheck does: an element written by one thread and read
//     or written by another is a race, and reading an element no thread of the block has written
//     is a read of uninitialised memory.
//   * launch limits: at most 1024 threads per block (64 in z), gridDim.y and gridDim.z at most
//     65535, no empty grid or block, at most 48 KB of dynamic shared memory (more needs an
//     opt-in, cudaFuncSetAttribute, that these kernels do not use).
//   * device asserts (MR_KERNEL_ASSERT): the launch fails with the assert's message.
// What it does not: warps (shuffles, votes, warp-synchronous code), atomics, static __shared__
// variables, streams, timing: the kernels use none of them. Blocks run one after another, so it
// cannot see two blocks racing on one address; the kernels' blocks write disjoint outputs.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// ---- CUDA's names, as a host compiler sees them -------------------------------------------------

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __syncthreads() ::cuda_emulator::syncthreads(__FILE__, __LINE__)
#define MR_KERNEL_ASSERT(condition, message)                                             \
  do {                                                                                   \
    if (!(condition)) ::cuda_emulator::device_assert(#condition, message, __FILE__, __LINE__); \
  } while (0)

namespace cuda_emulator {

constexpr unsigned kMaxThreadsPerBlock = 1024, kMaxBlockZ = 64, kMaxGridYZ = 65535;
constexpr unsigned long long kMaxGridX = 2147483647ULL;
constexpr size_t kMaxDynamicShared = 48 * 1024;

// What a failed launch throws (the torch operators turn it into a RuntimeError).
class LaunchError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Unwinds one thread of a block that has already failed; never leaves launch().
struct Aborted {};

// One access to shared memory, logged by the thread that made it.
struct Access {
  size_t offset;          // first byte
  size_t size;            // bytes
  bool write;
  const char* array;      // the name the kernel gave the array
  int64_t index;          // element index in that array
};

// The state of the block being run: its barrier, its shared memory, the access logs.
class Block {
 public:
  Block(const char* kernel, dim3 index, unsigned threads, size_t shared_bytes)
      : kernel_(kernel), index_(index), threads_(threads), shared_(shared_bytes, 0xFF),
        initialised_(shared_bytes, 0), writer_(shared_bytes, kNobody), first_write_(shared_bytes, 0),
        logs_(threads) {}

  unsigned char* shared() { return shared_.data(); }
  size_t shared_bytes() const { return shared_.size(); }
  std::vector<Access>& log(unsigned thread) { return logs_[thread]; }

  // ``where``: the barrier's place in the source, "file:line"
  void barrier(unsigned thread, const std::string& where) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (failed_) throw Aborted{};
    if (exited_ > 0) {
      fail_locked(describe_thread(thread) + " reached the __syncthreads() at " + where + " after " +
                  std::to_string(exited_) + " thread(s) of the block returned: they never arrive");
      throw Aborted{};
    }
    if (arrived_ == 0) {
      waiting_at_ = where;
    } else if (where != waiting_at_) {
      fail_locked("divergent __syncthreads(): " + describe_thread(thread) + " waits at " + where + " while " +
                  std::to_string(arrived_) + " thread(s) wait at " + waiting_at_);
      throw Aborted{};
    }
    if (++arrived_ == threads_) {  // the last one in: check the interval that ends here, open the next
      check_interval("the __syncthreads() at " + where);
      interval_start_ = "the __syncthreads() at " + where;
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      if (failed_) throw Aborted{};
      return;
    }
    const uint64_t generation = generation_;
    cv_.wait(lock, [&] { return generation_ != generation || failed_; });
    if (failed_) throw Aborted{};
  }

  void exited(unsigned thread) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++exited_;
    if (arrived_ > 0 && !failed_)
      fail_locked(describe_thread(thread) + " returned while " + std::to_string(arrived_) +
                  " thread(s) wait at the __syncthreads() at " + waiting_at_ +
                  ": they would wait forever");
  }

  // After every thread has finished: the last interval's accesses.
  void finish() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!failed_) check_interval("the end of the kernel");
  }

  void fail(const std::string& message) {
    std::lock_guard<std::mutex> lock(mutex_);
    fail_locked(message);
  }

  bool failed() {
    std::lock_guard<std::mutex> lock(mutex_);
    return failed_;
  }
  std::string error() {
    std::lock_guard<std::mutex> lock(mutex_);
    return error_;
  }

  std::string describe_thread(unsigned thread) const {
    return "thread " + std::to_string(thread) + " of block (" + std::to_string(index_.x) + ", " +
           std::to_string(index_.y) + ", " + std::to_string(index_.z) + ")";
  }

 private:
  static constexpr int kNobody = -1;

  void fail_locked(const std::string& message) {
    if (!failed_) error_ = std::string(kernel_) + ": " + message;
    failed_ = true;
    cv_.notify_all();
  }

  static std::string element(const Access& access) {
    return std::string(access.array) + "[" + std::to_string(access.index) + "]";
  }

  // The racecheck: every thread is waiting (or done), so the logs of the interval between two
  // barriers are complete. Between barriers there is no order between threads: a byte written
  // by one thread and read or written by another is a race, whatever order they ran in here.
  void check_interval(const std::string& interval_end) {
    const std::string interval = " between " + interval_start_ + " and " + interval_end;
    std::vector<size_t> touched;
    for (unsigned t = 0; t < threads_ && !failed_; ++t) {
      for (size_t position = 0; position < logs_[t].size() && !failed_; ++position) {
        const Access& access = logs_[t][position];
        if (!access.write) continue;
        for (size_t byte = access.offset; byte < access.offset + access.size; ++byte) {
          if (writer_[byte] == kNobody) {
            writer_[byte] = int(t);
            first_write_[byte] = position;
            touched.push_back(byte);
          } else if (writer_[byte] != int(t)) {
            fail_locked("shared-memory race: " + describe_thread(t) + " writes " + element(access) +
                        ", which thread " + std::to_string(writer_[byte]) + " also writes," + interval);
            break;
          }
        }
      }
    }
    for (unsigned t = 0; t < threads_ && !failed_; ++t) {
      for (size_t position = 0; position < logs_[t].size() && !failed_; ++position) {
        const Access& access = logs_[t][position];
        if (access.write) continue;
        for (size_t byte = access.offset; byte < access.offset + access.size; ++byte) {
          const int writer = writer_[byte];
          if (writer != kNobody && writer != int(t)) {
            fail_locked("shared-memory race: " + describe_thread(t) + " reads " + element(access) +
                        ", which thread " + std::to_string(writer) + " writes," + interval +
                        " (a __syncthreads() is missing)");
            break;
          }
          const bool written_before = writer == int(t) && first_write_[byte] < position;
          if (!initialised_[byte] && !written_before) {
            fail_locked("read of uninitialised shared memory: " + describe_thread(t) + " reads " + element(access) +
                        interval + ", and no thread of the block has written it");
            break;
          }
        }
      }
    }
    for (size_t byte : touched) {
      initialised_[byte] = 1;
      writer_[byte] = kNobody;
    }
    for (auto& log : logs_) log.clear();
  }

  const char* kernel_;
  const dim3 index_;
  const unsigned threads_;
  std::vector<unsigned char> shared_;
  std::vector<unsigned char> initialised_;  // per byte: written in an earlier interval
  std::vector<int> writer_;                 // per byte, this interval: kNobody or the thread that wrote it
  std::vector<size_t> first_write_;         // per byte: position of the writer's first write in its log
  std::vector<std::vector<Access>> logs_;   // per thread: its accesses in this interval, in order

  std::mutex mutex_;
  std::condition_variable cv_;
  unsigned arrived_ = 0, exited_ = 0;
  std::string waiting_at_;
  uint64_t generation_ = 0;
  std::string interval_start_ = "the start of the kernel";
  bool failed_ = false;
  std::string error_;
};

// The block the calling thread belongs to, and the thread's index in it.
inline thread_local Block* current_block = nullptr;
inline thread_local unsigned current_thread = 0;

inline Block& block_of_this_thread() {
  if (current_block == nullptr) throw std::logic_error("cuda_emulator: a device function called outside a launch");
  return *current_block;
}

// "file:line", the file without its directories.
inline std::string source_location(const char* file, int line) {
  const std::string path(file);
  return path.substr(path.find_last_of('/') + 1) + ":" + std::to_string(line);
}

inline void syncthreads(const char* file, int line) {
  block_of_this_thread().barrier(current_thread, source_location(file, line));
}

[[noreturn]] inline void device_assert(const char* condition, const char* message, const char* file, int line) {
  Block& block = block_of_this_thread();
  block.fail("device-side assert at " + source_location(file, line) + " in " + block.describe_thread(current_thread) +
             ": " + message + " (" + condition + ")");
  throw Aborted{};
}

// An array in the block's dynamic shared memory whose every access is checked and logged.
template <typename T>
class SharedArray {
 public:
  class Ref {
   public:
    Ref(const SharedArray& array, int64_t index) : array_(array), index_(index) {}
    operator T() const { return array_.load(index_); }
    Ref& operator=(T value) {
      array_.store(index_, value);
      return *this;
    }
    Ref& operator=(const Ref& other) { return *this = T(other); }
    Ref& operator+=(T value) { return *this = T(*this) + value; }

   private:
    const SharedArray& array_;
    int64_t index_;
  };

  SharedArray(Block& block, const char* name, size_t offset, int64_t count)
      : block_(block), name_(name), offset_(offset), count_(count) {}
  Ref operator[](int64_t index) const { return Ref(*this, index); }

  T load(int64_t index) const {
    const size_t byte = checked(index, false);
    T value;
    std::memcpy(&value, block_.shared() + byte, sizeof(T));
    return value;
  }
  void store(int64_t index, T value) const {
    const size_t byte = checked(index, true);
    std::memcpy(block_.shared() + byte, &value, sizeof(T));
  }

 private:
  size_t checked(int64_t index, bool write) const {
    if (index < 0 || index >= count_) {
      block_.fail("out-of-bounds shared-memory access: " + block_.describe_thread(current_thread) + " " +
                  (write ? "writes " : "reads ") + name_ + "[" + std::to_string(index) + "], which has " +
                  std::to_string(count_) + " elements");
      throw Aborted{};
    }
    const size_t byte = offset_ + size_t(index) * sizeof(T);
    block_.log(current_thread).push_back(Access{byte, sizeof(T), write, name_, index});
    return byte;
  }

  Block& block_;
  const char* name_;
  size_t offset_;
  int64_t count_;
};

// ``count`` elements of T at ``offset_bytes`` into the block's dynamic shared memory.
template <typename T>
SharedArray<T> dynamic_shared_array(const char* name, size_t offset_bytes, int64_t count) {
  Block& block = block_of_this_thread();
  const size_t end = offset_bytes + size_t(count) * sizeof(T);
  if (offset_bytes % alignof(T) != 0 || count < 0 || end > block.shared_bytes()) {
    block.fail(std::string("dynamic shared array ") + name + " takes bytes [" + std::to_string(offset_bytes) + ", " +
               std::to_string(end) + ") but the launch gave " + std::to_string(block.shared_bytes()) +
               (offset_bytes % alignof(T) != 0 ? " (and the offset is misaligned)" : ""));
    throw Aborted{};
  }
  return SharedArray<T>(block, name, offset_bytes, count);
}

// OS threads that run the threads of one block at a time, kept from one block to the next.
class ThreadPool {
 public:
  static ThreadPool& instance() {
    static ThreadPool pool;
    return pool;
  }

  // Runs job(t) for t in [0, threads) on `threads` workers; returns when all are done.
  void run(unsigned threads, const std::function<void(unsigned)>& job) {
    std::unique_lock<std::mutex> lock(mutex_);
    while (workers_.size() < threads) workers_.emplace_back(&ThreadPool::work, this, unsigned(workers_.size()));
    job_ = &job;
    active_ = remaining_ = threads;
    ++round_;
    wake_.notify_all();
    done_.wait(lock, [&] { return remaining_ == 0; });
    job_ = nullptr;
  }

  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

 private:
  void work(unsigned index) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || (round_ != seen && index < active_); });
      if (stopping_) return;
      seen = round_;
      const std::function<void(unsigned)>* job = job_;
      lock.unlock();
      (*job)(index);
      lock.lock();
      if (--remaining_ == 0) done_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(unsigned)>* job_ = nullptr;
  unsigned active_ = 0, remaining_ = 0;
  uint64_t round_ = 0;
  bool stopping_ = false;
};

inline void check_configuration(const char* kernel, dim3 grid, dim3 block, size_t shared_bytes) {
  std::ostringstream problem;
  const unsigned long long threads = 1ULL * block.x * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0)
    problem << "an empty grid (" << grid.x << ", " << grid.y << ", " << grid.z << ") or block (" << block.x << ", "
            << block.y << ", " << block.z << "): CUDA rejects it as an invalid configuration";
  else if (threads > kMaxThreadsPerBlock || block.z > kMaxBlockZ)
    problem << threads << " threads per block (" << block.x << ", " << block.y << ", " << block.z
            << "): at most " << kMaxThreadsPerBlock << ", and at most " << kMaxBlockZ << " in z";
  else if (grid.x > kMaxGridX || grid.y > kMaxGridYZ || grid.z > kMaxGridYZ)
    problem << "grid (" << grid.x << ", " << grid.y << ", " << grid.z << "): gridDim.y and gridDim.z are at most "
            << kMaxGridYZ;
  else if (shared_bytes > kMaxDynamicShared)
    problem << shared_bytes << " bytes of dynamic shared memory: more than 48 KB needs cudaFuncSetAttribute";
  if (!problem.str().empty()) throw LaunchError(std::string("launch of ") + kernel + ": " + problem.str());
}

inline std::mutex& launch_mutex() {
  static std::mutex mutex;
  return mutex;
}

// kernel<<<grid, block, shared_bytes>>>(args...), block after block. Throws LaunchError when
// the configuration is invalid or a block fails (race, divergent barrier, assert, ...).
template <typename... Params, typename... Args>
void launch(const char* kernel_name, dim3 grid, dim3 block, size_t shared_bytes, void (*kernel)(Params...),
            Args&&... args) {
  check_configuration(kernel_name, grid, block, shared_bytes);
  const std::tuple<std::decay_t<Params>...> arguments(std::forward<Args>(args)...);  // converted as by a launch
  const unsigned threads = block.x * block.y * block.z;
  std::lock_guard<std::mutex> one_launch_at_a_time(launch_mutex());
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        Block state(kernel_name, dim3(x, y, z), threads, shared_bytes);
        ThreadPool::instance().run(threads, [&](unsigned t) {
          threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
          blockIdx = dim3(x, y, z);
          blockDim = block;
          gridDim = grid;
          current_block = &state;
          current_thread = t;
          try {
            std::apply(kernel, arguments);
            state.exited(t);
          } catch (const Aborted&) {
          } catch (const std::exception& error) {
            state.fail(state.describe_thread(t) + " threw: " + error.what());
          }
          current_block = nullptr;
        });
        state.finish();
        if (state.failed()) throw LaunchError(state.error());
      }
}

}  // namespace cuda_emulator

template <typename T>
cuda_emulator::SharedArray<T> dynamic_shared_array(const char* name, size_t offset_bytes, int64_t count) {
  return cuda_emulator::dynamic_shared_array<T>(name, offset_bytes, count);
}

#define MR_LAUNCH(kernel, grid, block, shared_bytes, ...) \
  ::cuda_emulator::launch(#kernel, grid, block, shared_bytes, kernel, __VA_ARGS__)
