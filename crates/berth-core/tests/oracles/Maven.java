// Oracle for the Maven scheme (tests/version_oracles.rs), run as a single-file program:
//   java -cp maven-artifact-3.x.jar Maven.java
// Reads lines "V <hex>" and "C <hex a> <hex b>" (versions as hex of their UTF-8 bytes) on
// stdin and prints one answer per line: ok (ComparableVersion takes any text), or lt|eq|gt.

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import org.apache.maven.artifact.versioning.ComparableVersion;

public class Maven {
    public static void main(String[] args) throws IOException {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        StringBuilder answers = new StringBuilder();
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            String[] fields = line.split(" ");
            if (fields[0].equals("V")) {
                answers.append("ok\n");
            } else if (fields[0].equals("C")) {
                int order = new ComparableVersion(decode(fields[1])).compareTo(new ComparableVersion(decode(fields[2])));
                answers.append(order < 0 ? "lt" : order > 0 ? "gt" : "eq").append('\n');
            }
        }
        System.out.print(answers);
    }

    private static String decode(String hex) {
        byte[] bytes = new byte[hex.length() / 2];
        for (int i = 0; i < bytes.length; i++) {
            bytes[i] = (byte) Integer.parseInt(hex.substring(2 * i, 2 * i + 2), 16);
        }
        return new String(bytes, StandardCharsets.UTF_8);
    }
}
