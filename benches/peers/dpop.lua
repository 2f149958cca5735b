-- compare.sh's wrk script for DPoP-bound traffic (RFC 9449): every request carries
-- "Authorization: DPoP <token>" ($TOKEN) and its own "DPoP" proof, the next line of the file
-- named by $PROOFS (made by `tokengate dpop-proof --count N` just before the run: a proof is good
-- once and for 60 s). The file must hold more proofs than the run sends: a reused one is a replay,
-- answered 401 and counted as non-2xx.
local proofs = {}
for line in io.lines(os.getenv("PROOFS")) do
  if line ~= "" then
    proofs[#proofs + 1] = line
  end
end
local auth = "DPoP " .. os.getenv("TOKEN")
local at = 0

request = function()
  at = at % #proofs + 1
  return wrk.format("GET", nil, { ["Authorization"] = auth, ["DPoP"] = proofs[at] })
end
