package chat

import (
	"fmt"
	"slices"

	"github.com/moemesh/moemesh/tokenizer"
)

// budgetText is the Qwen3 Technical Report's stop-thinking text (QWEN3.md).
const budgetText = "Considering the limited time by the user, I have to give the solution based on the thinking directly now.\n</think>.\n\n"

// BudgetText returns the text inserted when the thinking reaches its budget,
// exactly as the Qwen3 Technical Report gives it. It closes the thinking
// (</think>) and the model then writes its answer.
func BudgetText() string { return budgetText }

// BudgetInsert returns the tokens of BudgetText, to be forced into the
// sequence when the thinking budget is reached, and the id of </think> (a
// special token within them). A scheduler that forces them should not force
// them again once the sequence holds that id.
func BudgetInsert(tok *tokenizer.Tokenizer) ([]int32, int32, error) {
	end, ok := tok.TokenID(thinkEnd)
	if !ok {
		return nil, 0, fmt.Errorf("chat: tokenizer has no %s token: no thinking budget", thinkEnd)
	}
	ids := tok.Encode(budgetText)
	if !slices.Contains(ids, end) {
		return nil, 0, fmt.Errorf("chat: the budget text does not encode %s as its token", thinkEnd)
	}
	out := make([]int32, len(ids))
	for i, id := range ids {
		out[i] = int32(id)
	}
	return out, int32(end), nil
}
