-- compare.sh's wrk script: every request carries "Authorization: Bearer <token>", taking the
-- lines of the file named by $TOKENS in turn (from a random line, so threads do not move in
-- step). Without $TOKENS, requests carry no Authorization header; they still go through this
-- script so that every target costs the load generator the same.
local tokens = {}
local path = os.getenv("TOKENS")
if path and path ~= "" then
  for line in io.lines(path) do
    if line ~= "" then
      tokens[#tokens + 1] = "Bearer " .. line
    end
  end
end
local n = #tokens
local at = n > 0 and math.random(n) or 0
local plain

-- Called by wrk once the target is known (wrk.format needs its Host header).
init = function(args)
  plain = wrk.format("GET")
end

request = function()
  if n == 0 then
    return plain
  end
  at = at % n + 1
  return wrk.format("GET", nil, { ["Authorization"] = tokens[at] })
end
