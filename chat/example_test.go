package chat_test

import (
	"fmt"
	"log"

	"github.com/moemesh/moemesh/chat"
	"github.com/moemesh/moemesh/tokenizer"
)

func Example() {
	tok, err := tokenizer.Qwen3()
	if err != nil {
		log.Fatal(err)
	}
	prompt, err := chat.Render(tok, chat.Conversation{
		Messages:            []chat.Message{{Role: "user", Content: "What is 2+2? /no_think"}},
		AddGenerationPrompt: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q thinking=%v\n", prompt.Text, prompt.Thinking)

	// What a model might generate, fed token by token.
	p := chat.NewParser(tok, prompt.Thinking)
	var reply chat.Delta
	for _, id := range tok.Encode("The answer is 4.<|im_end|>") {
		reply.Append(p.Push(int32(id)))
	}
	reply.Append(p.Flush())
	fmt.Printf("content %q, reasoning %q\n", reply.Content, reply.Reasoning)
	// Output:
	// "<|im_start|>user\nWhat is 2+2? /no_think<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n" thinking=false
	// content "The answer is 4.", reasoning ""
}

func ExampleParser_toolCall() {
	tok, err := tokenizer.Qwen3()
	if err != nil {
		log.Fatal(err)
	}
	p := chat.NewParser(tok, true)
	var reply chat.Delta
	gen := "Need the weather.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern\"}}\n</tool_call><|im_end|>"
	for _, id := range tok.Encode(gen) {
		reply.Append(p.Push(int32(id)))
	}
	reply.Append(p.Flush())
	fmt.Printf("reasoning %q, content %q\n", reply.Reasoning, reply.Content)
	for _, c := range reply.ToolCalls {
		fmt.Println(c.Name, c.Arguments)
	}
	// Output:
	// reasoning "Need the weather.\n", content ""
	// get_weather {"city": "Bern"}
}
