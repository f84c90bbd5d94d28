package sampling_test

import (
	"fmt"

	"github.com/moemesh/moemesh/sampling"
)

func Example() {
	// Logits over a toy vocabulary of five ids; a real row has 151,936.
	logits := []float32{1.5, 3.2, 0.1, 3.0, -2}
	prompt := []int{4, 2}

	// Greedy decoding takes the arg max.
	greedy, err := sampling.New(sampling.Greedy())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("greedy:", greedy.Sample(logits, prompt, nil))

	// A repetition penalty of 1.2 turns 3.2 into 3.2/1.2 ≈ 2.67 once id 1
	// has been generated, so greedy decoding moves on to id 3.
	p := sampling.Greedy()
	p.RepetitionPenalty = 1.2
	penalized, err := sampling.New(p)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("penalized:", penalized.Sample(logits, prompt, []int{1}))

	// Seeded sampling with the model card's thinking-mode settings: the
	// same seed gives the same tokens on every run and platform.
	p = sampling.ThinkingDefaults()
	p.Seed = 2025
	s, err := sampling.New(p)
	if err != nil {
		fmt.Println(err)
		return
	}
	var generated []int
	for range 8 {
		generated = append(generated, s.Sample(logits, prompt, generated))
	}
	fmt.Println("sampled:", generated)

	// Out-of-range parameters are rejected.
	p.TopP = 0
	_, err = sampling.New(p)
	fmt.Println(err)
	// Output:
	// greedy: 1
	// penalized: 3
	// sampled: [3 3 1 1 3 1 1 1]
	// sampling: invalid parameters: top-p 0 must be in (0, 1] (1 turns it off)
}
