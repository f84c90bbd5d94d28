package sharding

// RouteIn returns the worker that computes expert for a token held by some
// member of group (a tensor-parallel group, whose ranks split the step's
// tokens by their position in the batch). Unlike Route, the answer does not
// depend on which member holds the token, so a token's experts are computed
// on the same workers whatever the rest of its batch: among the expert's
// owners inside group, the one at key % their count; when no member hosts
// it, Owner(expert, key). With a group of one worker it equals Route.
//
// group must list distinct workers ascending (Layout.GroupWorkers does).
func (p *Placement) RouteIn(group []int, expert int, key uint64) int {
	o := p.Owners[expert]
	in := 0
	for _, w := range o {
		if inGroup(group, w) {
			in++
		}
	}
	if in == 0 {
		return p.Owner(expert, key)
	}
	k := int(key % uint64(in))
	for _, w := range o {
		if inGroup(group, w) {
			if k == 0 {
				return w
			}
			k--
		}
	}
	panic("unreachable")
}

func inGroup(group []int, w int) bool {
	for _, g := range group {
		if g == w {
			return true
		}
	}
	return false
}
