// Complete asks one question and prints the answer, the reasoning trace if the model thinks,
// and the tokens used. MAGISTRAL_BASE_URL, MAGISTRAL_API_KEY and MAGISTRAL_MODEL configure it.
//
//	go run ./examples/complete "Why is the sky blue?"
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"

	magistral "github.com/magistral/magistral-go"
)

func main() {
	question := "Say hello."
	if len(os.Args) > 1 {
		question = strings.Join(os.Args[1:], " ")
	}
	model := os.Getenv("MAGISTRAL_MODEL")
	if model == "" {
		model = "magistral-medium-latest"
	}
	client := magistral.NewClient("") // the key and the URL come from the environment
	response, err := client.Chat.Complete(context.Background(), magistral.ChatRequest{
		Model:     model,
		Messages:  []magistral.Message{{Role: "user", Content: question}},
		MaxTokens: magistral.Int(64),
	})
	if err != nil {
		log.Fatal(err)
	}
	if thinking := response.Thinking(); thinking != "" {
		fmt.Printf("thinking: %s\n", thinking)
	}
	fmt.Printf("answer: %s\n", response.Text())
	fmt.Printf("finish_reason: %s, tokens: %d prompt + %d completion\n", response.FinishReason(),
		response.Usage.PromptTokens, response.Usage.CompletionTokens)
}
