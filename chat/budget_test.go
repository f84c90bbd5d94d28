package chat

import (
	"testing"
)

func TestBudget(t *testing.T) {
	// QWEN3.md, quoting the Qwen3 Technical Report.
	const report = "Considering the limited time by the user, I have to give the solution based on the thinking directly now.\n</think>.\n\n"
	if BudgetText() != report {
		t.Fatalf("BudgetText() = %q", BudgetText())
	}
	tok := qwen3(t)
	ids, end, err := BudgetInsert(tok)
	if err != nil {
		t.Fatal(err)
	}
	if end != 151668 { // </think> in QWEN3.md
		t.Errorf("end = %d, want 151668", end)
	}
	n := 0
	back := make([]int, len(ids))
	for i, id := range ids {
		back[i] = int(id)
		if id == end {
			n++
		}
	}
	if n != 1 {
		t.Errorf("</think> appears %d times in %v", n, ids)
	}
	if got := tok.Decode(back); got != report {
		t.Errorf("tokens decode to %q", got)
	}
}
