package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/moemesh/moemesh/coordinator/etcdembed"
	"github.com/moemesh/moemesh/coordinator/store"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "etcd")
	defer os.RemoveAll(dir)
	ecfg := etcdembed.DefaultConfig(dir)
	ecfg.Log = nil
	etcd, err := etcdembed.Start(ctx, ecfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer etcd.Close()

	cfg := store.DefaultConfig()
	cfg.Endpoints = etcd.Endpoints()
	s, err := store.Open(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	// A worker registers on its own lease.
	reg, err := s.RegisterWorker(ctx, &pb.WorkerRecord{Id: "w0", Addr: "127.0.0.1:7000"}, 10*time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close(ctx)

	// A coordinator becomes leader and publishes the first placement.
	leader, err := s.Campaign(ctx, "c0", 10*time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer leader.Resign(ctx)
	err = s.PublishPlacement(ctx, leader, &pb.PlacementRecord{Epoch: 1, WorkerIds: []string{"w0"}, Reason: "initial"})
	fmt.Println("publish 1:", err)
	err = s.PublishPlacement(ctx, leader, &pb.PlacementRecord{Epoch: 1})
	fmt.Println("publish 1 again is stale:", errors.Is(err, store.ErrStaleEpoch))

	workers, _ := s.Workers(ctx)
	cur, _ := s.CurrentPlacement(ctx)
	fmt.Println("workers:", len(workers), "epoch:", cur.Epoch, "by", cur.Leader)
	// Output:
	// publish 1: <nil>
	// publish 1 again is stale: true
	// workers: 1 epoch: 1 by c0
}
