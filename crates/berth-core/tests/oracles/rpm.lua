-- Oracle for the Rpm scheme (tests/version_oracles.rs), run inside rpm's own Lua:
--   rpm --eval "%{lua: dofile('rpm.lua')}" < questions
-- Reads lines "V <hex>" and "C <hex a> <hex b>" (versions as hex of their UTF-8 bytes) on
-- stdin and prints one answer per line: ok, or lt|eq|gt (err if rpm refuses a version).
-- rpm.vercmp parses both sides as [epoch:]version[-release] and compares with rpmverCmp.
local function decode(hex)
  return (hex:gsub("..", function(byte) return string.char(tonumber(byte, 16)) end))
end
local answers = {}
for line in io.lines() do
  local op, a, b = line:match("^(%a) (%x+) ?(%x*)$")
  if op == "V" then
    answers[#answers + 1] = "ok"
  elseif op == "C" then
    local ok, order = pcall(rpm.vercmp, decode(a), decode(b))
    if not ok then
      answers[#answers + 1] = "err"
    elseif order < 0 then
      answers[#answers + 1] = "lt"
    elseif order > 0 then
      answers[#answers + 1] = "gt"
    else
      answers[#answers + 1] = "eq"
    end
  end
end
-- rpm's print does not end lines, so print everything at once.
print(table.concat(answers, "\n") .. "\n")
