-- wrk: each connection is its own logged-in client, with its own session cookie.
-- The cookies come one per line from the file named by $COOKIES (written by bench/pages.py).
local cookies = {}
for line in io.lines(os.getenv("COOKIES")) do
  if line ~= "" then cookies[#cookies + 1] = line end
end
local counter = 0

function setup(thread)
  thread:set("offset", counter)
  counter = counter + 1
end

function init(args)
  index = offset
end

request = function()
  index = index + 2  -- two wrk threads: interleave so each request takes the next client's cookie
  local cookie = cookies[(index % #cookies) + 1]
  return wrk.format("GET", "/", {["Cookie"] = cookie, ["Host"] = "127.0.0.1"})
end
