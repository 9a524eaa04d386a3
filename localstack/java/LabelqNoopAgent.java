import java.lang.instrument.Instrumentation;

/**
 * A Java agent that does nothing.
 *
 * <p>LocalStack starts DynamoDB Local with {@code -javaagent:.../ddb-local-loader-0.1.jar}, an agent
 * it normally downloads at first use to lift DynamoDB Local's limit of 20 global secondary indexes.
 * That download is impossible on an offline machine, and labelq needs one index, so install.sh
 * builds this class into a jar of that name: the JVM starts, finds a valid agent, and carries on.
 */
public final class LabelqNoopAgent {
    private LabelqNoopAgent() {}

    /** Called by the JVM before DynamoDB Local's main method; deliberately empty. */
    public static void premain(String args, Instrumentation instrumentation) {}
}
