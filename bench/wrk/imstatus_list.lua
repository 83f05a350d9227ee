-- wrk -s imstatus_list.lua : GET /v1/accounts (every account the token sees) with a bearer token (B6 "list all")
local token = os.getenv("TOKEN") or "bench-token"
wrk.method = "GET"
wrk.path = "/v1/accounts"
wrk.headers["Authorization"] = "Bearer " .. token
