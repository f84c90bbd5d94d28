package store

import "context"

// GossipSeeds lists the memberlist addresses of every registered worker
// and coordinator, for a new member to join.
func (s *Store) GossipSeeds(ctx context.Context) ([]string, error) {
	ws, err := s.Workers(ctx)
	if err != nil {
		return nil, err
	}
	cs, err := s.Coordinators(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, w := range ws {
		if w.GossipAddr != "" {
			out = append(out, w.GossipAddr)
		}
	}
	for _, c := range cs {
		if c.GossipAddr != "" {
			out = append(out, c.GossipAddr)
		}
	}
	return out, nil
}
