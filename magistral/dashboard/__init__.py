"""The usage dashboard: one static page that signs in with an API key and reads /v1/account,
/v1/usage and /v1/usage/invoice (pre-aggregated data) through the API's own auth."""
