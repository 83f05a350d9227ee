-- wrk -s imstatus_get.lua : GET /v1/accounts/u0001..u$NUSERS (random) with a bearer token (B6)
-- Works against the imstatus gateway (bench_server --accounts N) and the floor example.
local n = tonumber(os.getenv("NUSERS") or "2000")
local token = os.getenv("TOKEN") or "bench-token"
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer " .. token
request = function()
  return wrk.format(nil, string.format("/v1/accounts/u%04d", math.random(1, n)))
end
