package adamw

/*
#include "adamw.h"

// Runs one of the library's tasks (a C function pointer, which Go cannot call itself).
static inline void adamwRunTask(adamw_task_fn task, void *task_data, size_t index) { task(task_data, index); }

void goAdamwParallelFor(void *user_data, size_t n_tasks, adamw_task_fn task, void *task_data);
*/
import "C"

import (
	"runtime/cgo"
	"sync"
	"unsafe"
)

// goroutineRunner is the parallel-for an optimizer gives the library after SetGoroutines.
type goroutineRunner struct {
	goroutines int
}

// runTasks runs tasks 0..n-1 on r.goroutines goroutines, the calling one included, each taking
// a contiguous share (the same share every step).
func (r *goroutineRunner) runTasks(n int, task C.adamw_task_fn, taskData unsafe.Pointer) {
	k := r.goroutines
	if k > n {
		k = n
	}
	share := func(g int) {
		for i := n * g / k; i < n*(g+1)/k; i++ {
			C.adamwRunTask(task, taskData, C.size_t(i))
		}
	}
	var wg sync.WaitGroup
	for g := 1; g < k; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			share(g)
		}(g)
	}
	share(0)
	wg.Wait()
}

// SetGoroutines runs the tasks of every step on n goroutines of the Go scheduler (the calling
// one and n-1 started by each step that has tasks to share) instead of the library's threads;
// with it set the library starts no thread of its own. n = 0 restores Config.Threads. The
// results are the same bits either way (adamw_optimizer_set_parallel_for). Steps with no
// variable over 32K elements run on the calling goroutine alone; a step that starts goroutines
// allocates them.
func (o *Optimizer) SetGoroutines(n int) error {
	if n < 0 {
		n = 0
	}
	return o.call(func(h *C.adamw_optimizer) C.enum_adamw_status {
		if n == 0 {
			return C.adamw_optimizer_set_parallel_for(h, nil, nil)
		}
		if o.runner == nil {
			o.runner = &goroutineRunner{}
			o.runnerData = o.keepInC(o.runner)
		}
		o.runner.goroutines = n
		return C.adamw_optimizer_set_parallel_for(h, C.adamw_parallel_for_fn(C.goAdamwParallelFor), o.runnerData)
	})
}

//export goAdamwParallelFor
func goAdamwParallelFor(userData unsafe.Pointer, n C.size_t, task C.adamw_task_fn, taskData unsafe.Pointer) {
	cgo.Handle(*(*C.uintptr_t)(userData)).Value().(*goroutineRunner).runTasks(int(n), task, taskData)
}
