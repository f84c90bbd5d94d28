package tokenizer_test

import (
	"fmt"
	"log"

	"github.com/moemesh/moemesh/tokenizer"
)

func Example() {
	tok, err := tokenizer.Qwen3()
	if err != nil {
		log.Fatal(err)
	}
	enableThinking := false
	prompt, err := tok.ApplyChatTemplate(
		[]tokenizer.Message{{Role: "user", Content: "Hi!"}},
		tokenizer.TemplateOptions{AddGenerationPrompt: true, EnableThinking: &enableThinking},
	)
	if err != nil {
		log.Fatal(err)
	}
	ids := tok.Encode(prompt)
	fmt.Printf("%q\n", prompt)
	fmt.Println(ids)
	fmt.Printf("%q\n", tok.Decode(ids[3:5]))
	fmt.Println(tok.EOSIDs())
	// Output:
	// "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
	// [151644 872 198 13048 0 151645 198 151644 77091 198 151667 271 151668 271]
	// "Hi!"
	// [151645 151643]
}
