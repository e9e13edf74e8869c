// Image asks a vision model about an image: a file (sent as a base64 data URL) or an http(s)
// URL (fetched by the server). MAGISTRAL_BASE_URL, MAGISTRAL_API_KEY and MAGISTRAL_MODEL
// configure it.
//
//	go run ./examples/image photo.png "What is in this picture?"
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
	if len(os.Args) < 2 {
		log.Fatal("usage: image PATH-OR-URL [QUESTION]")
	}
	question := "What is in this picture?"
	if len(os.Args) > 2 {
		question = strings.Join(os.Args[2:], " ")
	}
	model := os.Getenv("MAGISTRAL_MODEL")
	if model == "" {
		model = "magistral-medium-latest"
	}
	message, err := magistral.UserMessage(question, os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	client := magistral.NewClient("")
	response, err := client.Chat.Complete(context.Background(), magistral.ChatRequest{
		Model:     model,
		Messages:  []magistral.Message{message},
		MaxTokens: magistral.Int(64),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("answer: %s\n", response.Text())
	fmt.Printf("finish_reason: %s, tokens: %d prompt (the image's included) + %d completion\n",
		response.FinishReason(), response.Usage.PromptTokens, response.Usage.CompletionTokens)
}
