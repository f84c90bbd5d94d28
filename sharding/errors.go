package sharding

import "errors"

// Sentinel errors. Functions wrap them with a message that names the
// offending numbers; test for them with errors.Is.
var (
	// ErrInvalid reports an argument outside its range (a count that is not
	// positive, a load that is negative or not finite, a slice of the wrong
	// length).
	ErrInvalid = errors.New("sharding: invalid argument")
	// ErrIndivisible reports counts that cannot be split evenly: heads over
	// tensor-parallel ranks, workers over attention groups.
	ErrIndivisible = errors.New("sharding: indivisible")
	// ErrCapacity reports expert slots that do not fit on the workers.
	ErrCapacity = errors.New("sharding: not enough capacity")
	// ErrInconsistent reports a Placement whose fields contradict each other.
	ErrInconsistent = errors.New("sharding: inconsistent placement")
)
