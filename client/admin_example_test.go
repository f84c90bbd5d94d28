package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/moemesh/moemesh/client"
	adminv1 "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
)

// Draining a worker through a standby and the leader: the standby answers
// UNAVAILABLE, the client moves on before the operation starts, and the
// caller reads the leader's progress to phase DONE.
func ExampleAdminClient_Drain() {
	standby, stopStandby, err := serveAdmin(&fakeAdmin{code: codes.Unavailable})
	if err != nil {
		log.Fatal(err)
	}
	defer stopStandby()
	leader, stopLeader, err := serveAdmin(&fakeAdmin{progress: progress(
		adminv1.Phase_PHASE_PREPARING, adminv1.Phase_PHASE_SWITCHING, adminv1.Phase_PHASE_DONE)})
	if err != nil {
		log.Fatal(err)
	}
	defer stopLeader()

	c, err := client.DialAdmin([]string{standby, leader}, client.WithInsecure(), client.WithAPIKey("admin-token"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	st, err := c.Drain(ctx, &adminv1.DrainRequest{WorkerId: "w-1"})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			log.Fatal(err) // ABORTED, or client.ErrInterrupted: see GetStatus
		}
		fmt.Println(m.GetPhase(), m.GetWorkersReady(), "of", m.GetWorkersTotal())
	}
	// Output:
	// PHASE_PREPARING 0 of 3
	// PHASE_SWITCHING 1 of 3
	// PHASE_DONE 2 of 3
}
