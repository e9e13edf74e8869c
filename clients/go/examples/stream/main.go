// Stream prints an answer as it is generated, its thinking (if any) between <thinking> tags.
// Ctrl-C cancels the context, which closes the connection and stops the generation.
// MAGISTRAL_BASE_URL, MAGISTRAL_API_KEY and MAGISTRAL_MODEL configure it.
//
//	go run ./examples/stream "Write a haiku about Go."
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	client := magistral.NewClient("")
	stream, err := client.Chat.Stream(ctx, magistral.ChatRequest{
		Model:     model,
		Messages:  []magistral.Message{{Role: "user", Content: question}},
		MaxTokens: magistral.Int(64),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer stream.Close()
	thinking := false // inside <thinking> … </thinking>
	for stream.Next() {
		event := stream.Event()
		if thinking && event.Kind != magistral.EventThinking {
			fmt.Print("</thinking>\n")
			thinking = false
		}
		switch event.Kind {
		case magistral.EventThinking:
			if !thinking {
				fmt.Print("<thinking>")
				thinking = true
			}
			fmt.Print(event.Text)
		case magistral.EventText:
			fmt.Print(event.Text)
		case magistral.EventToolCall:
			fmt.Printf("\ntool call: %s(%s)", event.ToolCall.Function.Name, event.ToolCall.Function.Arguments)
		case magistral.EventEnd:
			fmt.Printf("\nfinish_reason: %s", event.FinishReason)
			if event.Usage != nil {
				fmt.Printf(", tokens: %d prompt + %d completion", event.Usage.PromptTokens, event.Usage.CompletionTokens)
			}
			fmt.Println()
		}
	}
	if err := stream.Err(); err != nil {
		log.Fatal(err)
	}
}
