package main

import (
	"context"
	"errors"

	"github.com/moemesh/moemesh/model"
)

// startLocalCluster starts c.Workers worker processes on loopback and a step driver.
func startLocalCluster(ctx context.Context, s IOStreams, dir string, c *clusterFlags) (model.Stepper, *model.BlockPool, func(), error) {
	return nil, nil, nil, errors.New("distributed execution (--workers > 1) is not built yet")
}
