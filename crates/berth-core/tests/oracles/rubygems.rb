# Oracle for the RubyGems scheme (tests/version_oracles.rs), with the Gem::Version of the
# RubyGems that comes with `ruby`. Reads lines "V <hex>" and "C <hex a> <hex b>" (versions as
# hex of their UTF-8 bytes) on stdin and prints one answer per line: ok|blank|err, or
# lt|eq|gt|err, as Gem::Version.correct? and Gem::Version#<=> decide.
#
# "blank": correct? accepts an empty or all-blank string, and Gem::Version.new reads it as
# "0". Berth refuses it instead (src/version/rubygems.rs), so it is answered apart and never
# compared.
require "rubygems"

def decode(hex)
  [hex.to_s].pack("H*").force_encoding(Encoding::UTF_8)
end

def blank?(text)
  text.match?(/\A\s*\z/) && Gem::Version.new(text) == Gem::Version.new("0")
end

def valid?(text)
  Gem::Version.correct?(text) && !blank?(text)
end

answers = []
$stdin.each_line do |line|
  op, a, b = line.split(" ")
  case op
  when "V"
    text = decode(a)
    answers << if blank?(text)
      "blank"
    elsif Gem::Version.correct?(text)
      "ok"
    else
      "err"
    end
  when "C"
    x, y = decode(a), decode(b)
    answers << if valid?(x) && valid?(y)
      case Gem::Version.new(x) <=> Gem::Version.new(y)
      when -1 then "lt"
      when 0 then "eq"
      when 1 then "gt"
      else "err"
      end
    else
      "err"
    end
  end
end
$stdout.write(answers.map { |answer| answer + "\n" }.join)
