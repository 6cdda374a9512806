#!/bin/sh
# Oracle for the Dpkg scheme (tests/version_oracles.rs). Reads lines "V <version>" (is it a
# version dpkg accepts?) and "C <a> <b>" (how does dpkg order them?) and prints one answer
# per line: ok|err, or lt|eq|gt|err. Versions hold no whitespace. dpkg exits 2 on a version
# it refuses and only warns about the ones it merely dislikes, which it still compares.
while read -r op a b; do
  case "$op" in
    V)
      if dpkg --compare-versions -- "$a" eq "$a" 2>/dev/null || [ $? -eq 1 ]; then
        echo ok
      else
        echo err
      fi
      ;;
    C)
      dpkg --compare-versions -- "$a" lt "$b" 2>/dev/null
      rc=$?
      if [ "$rc" -eq 0 ]; then
        echo lt
      elif [ "$rc" -eq 1 ]; then
        if dpkg --compare-versions -- "$a" eq "$b" 2>/dev/null; then echo eq; else echo gt; fi
      else
        echo err
      fi
      ;;
  esac
done
