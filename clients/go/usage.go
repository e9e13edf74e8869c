package magistral

import (
	"context"
	"net/url"
)

// UsageParams selects a usage report: UTC days from Start to End inclusive ("YYYY-MM-DD";
// empty: this month so far), grouped by "day" (the default), "key" or "model".
type UsageParams struct {
	Start, End string
	GroupBy    string
}

// UsageReport is the calling account's usage (GET /v1/usage).
type UsageReport struct {
	Object  string       `json:"object"`
	Account string       `json:"account"`
	Start   string       `json:"start"`
	End     string       `json:"end"`
	GroupBy string       `json:"group_by"`
	Data    []UsageEntry `json:"data"`
}

// UsageEntry is one group of a usage report; of Day, Key and Model only the grouping one is set.
// CostUSD is at list price, as a decimal string (volume discounts belong to the invoice).
type UsageEntry struct {
	Day              string `json:"day,omitempty"`
	Key              int64  `json:"key,omitempty"`
	KeyName          string `json:"key_name,omitempty"`
	Model            string `json:"model,omitempty"`
	Requests         int64  `json:"requests"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	TotalTokens      int64  `json:"total_tokens"`
	CostUSD          string `json:"cost_usd"`
}

// Invoice is the calling account's invoice for a month (GET /v1/usage/invoice). Amounts are
// decimal strings of dollars, exact to the micro-dollar.
type Invoice struct {
	Object        string           `json:"object"`
	Account       string           `json:"account"`
	Month         string           `json:"month"`
	TotalTokens   int64            `json:"total_tokens"`
	TotalUSD      string           `json:"total_usd"`
	TotalMicroUSD int64            `json:"total_micro_usd"`
	TokensByTier  map[string]int64 `json:"tokens_by_tier"`
	Lines         []InvoiceLine    `json:"lines"`
}

// InvoiceLine is one model's tokens and amounts in an invoice.
type InvoiceLine struct {
	Model            string `json:"model"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	ListUSD          string `json:"list_usd"`
	DiscountUSD      string `json:"discount_usd"`
	AmountUSD        string `json:"amount_usd"`
}

// Account is the calling key, its account and its limits (GET /v1/account).
type Account struct {
	Object        string `json:"object"`
	Account       string `json:"account"`
	Tier          string `json:"tier"`
	BillingStatus string `json:"billing_status"`
	Key           struct {
		ID        int64   `json:"id"`
		Name      string  `json:"name"`
		Prefix    string  `json:"prefix"`
		ExpiresAt *string `json:"expires_at"`
	} `json:"key"`
	Limits struct {
		RequestsPerMinute int64 `json:"requests_per_minute"`
		TokensPerMinute   int64 `json:"tokens_per_minute"`
	} `json:"limits"`
	Remaining struct {
		RequestsThisMinute int64 `json:"requests_this_minute"`
		TokensThisMinute   int64 `json:"tokens_this_minute"`
	} `json:"remaining"`
	PricesPerMillionTokens map[string]struct {
		Input  string `json:"input"`
		Output string `json:"output"`
	} `json:"prices_per_million_tokens"`
}

// UsageService reads the calling account's usage, invoices and limits (client.Usage).
type UsageService struct{ client *Client }

// Get returns a usage report.
func (s *UsageService) Get(ctx context.Context, params UsageParams) (*UsageReport, error) {
	query := url.Values{}
	for name, value := range map[string]string{"start": params.Start, "end": params.End, "group_by": params.GroupBy} {
		if value != "" {
			query.Set(name, value)
		}
	}
	path := "/v1/usage"
	if len(query) > 0 {
		path += "?" + query.Encode()
	}
	var report UsageReport
	if err := s.client.getJSON(ctx, "GET", path, nil, &report); err != nil {
		return nil, err
	}
	return &report, nil
}

// Invoice returns the invoice of month ("YYYY-MM"; empty: this month so far).
func (s *UsageService) Invoice(ctx context.Context, month string) (*Invoice, error) {
	path := "/v1/usage/invoice"
	if month != "" {
		path += "?month=" + url.QueryEscape(month)
	}
	var invoice Invoice
	if err := s.client.getJSON(ctx, "GET", path, nil, &invoice); err != nil {
		return nil, err
	}
	return &invoice, nil
}

// Account returns the calling key, its account, its limits and what remains of them this minute.
func (s *UsageService) Account(ctx context.Context) (*Account, error) {
	var account Account
	if err := s.client.getJSON(ctx, "GET", "/v1/account", nil, &account); err != nil {
		return nil, err
	}
	return &account, nil
}
