package membership_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/moemesh/moemesh/membership"
)

// A coordinator starts the cluster and a worker joins it; the coordinator
// would act on the events it receives.
func Example() {
	events := make(chan membership.Event, 16) // OnEvent must not block

	ccfg := membership.DefaultConfig()
	ccfg.Name = "coordinator-0"
	ccfg.Role = membership.RoleCoordinator
	ccfg.Log = slog.New(slog.DiscardHandler)
	ccfg.OnEvent = func(e membership.Event) { events <- e }
	coord, err := membership.New(ccfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer coord.Shutdown()

	wcfg := membership.DefaultConfig()
	wcfg.Name = "worker-0"
	wcfg.Role = membership.RoleWorker
	wcfg.Meta = map[string]string{"addr": "127.0.0.1:7070"}
	wcfg.Log = slog.New(slog.DiscardHandler)
	worker, err := membership.New(wcfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer worker.Shutdown()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := worker.Join(ctx, []string{coord.Addr()}); err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range worker.Members() {
		fmt.Println(m.Name, m.Role, m.Meta)
	}

	// The coordinator hears of the worker (after its own join).
	for e := range events {
		if e.Member.Name == "worker-0" {
			fmt.Println(e.Kind, e.Member.Name)
			break
		}
	}
	// Output:
	// coordinator-0 coordinator map[]
	// worker-0 worker map[addr:127.0.0.1:7070]
	// join worker-0
}
