// What a JDBC application does, printed one line per step, so that a run straight against MariaDB and a run
// through ddm can be compared line by line (tests/integration/test_jdbc.py).
//
//   java -cp /usr/share/java/mariadb-java-client.jar:DIR JdbcProbe JDBC_URL USER PASSWORD
//
// Nothing printed may depend on the server instance: no versions, connection ids, times or host names.

import java.math.BigDecimal;
import java.sql.*;
import java.util.ArrayList;
import java.util.List;

public class JdbcProbe {
    static void out(String step, Object value) {
        System.out.println(step + ": " + value);
    }

    static String rows(ResultSet rs) throws SQLException {
        ResultSetMetaData md = rs.getMetaData();
        StringBuilder sb = new StringBuilder();
        while (rs.next()) {
            sb.append('[');
            for (int i = 1; i <= md.getColumnCount(); i++) {
                if (i > 1) sb.append(", ");
                Object v = rs.getObject(i);
                if (v instanceof byte[]) {
                    StringBuilder hex = new StringBuilder("0x");
                    for (byte b : (byte[]) v) hex.append(String.format("%02x", b));
                    v = hex;
                }
                sb.append(rs.wasNull() ? "NULL" : String.valueOf(v));
            }
            sb.append(']');
        }
        return sb.toString();
    }

    static String meta(ResultSetMetaData md) throws SQLException {
        List<String> cols = new ArrayList<>();
        for (int i = 1; i <= md.getColumnCount(); i++) {
            cols.add(md.getColumnLabel(i) + " " + md.getColumnTypeName(i) + "(" + md.getPrecision(i) + ","
                    + md.getScale(i) + ") nullable=" + md.isNullable(i) + " class=" + md.getColumnClassName(i));
        }
        return String.join("; ", cols);
    }

    static void error(String step, Statement st, String sql) {
        try {
            st.execute(sql);
            out(step, "no error");
        } catch (SQLException e) {
            out(step, e.getErrorCode() + " " + e.getSQLState());
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        try (Connection c = DriverManager.getConnection(url, args[1], args[2])) {
            out("valid", c.isValid(5));
            out("autocommit", c.getAutoCommit());
            out("isolation", c.getTransactionIsolation());
            try (Statement st = c.createStatement()) {
                st.execute("DROP TABLE IF EXISTS jprobe");
                st.execute("CREATE TABLE jprobe (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(40) NOT NULL, "
                        + "amount DECIMAL(10,2), made DATETIME, flag BOOLEAN, data BLOB, note TEXT)");
                out("insert text", st.executeUpdate(
                        "INSERT INTO jprobe (name, amount, made, flag) VALUES ('a', 1.50, '2024-01-02 03:04:05', 1)",
                        Statement.RETURN_GENERATED_KEYS));
                try (ResultSet keys = st.getGeneratedKeys()) {
                    out("generated key", rows(keys));
                }
            }
            try (PreparedStatement ps = c.prepareStatement(
                    "INSERT INTO jprobe (name, amount, made, flag, data, note) VALUES (?, ?, ?, ?, ?, ?)",
                    Statement.RETURN_GENERATED_KEYS)) {
                ps.setString(1, "b'quote\"");
                ps.setBigDecimal(2, new BigDecimal("12345678.91"));
                ps.setTimestamp(3, Timestamp.valueOf("2023-12-31 23:59:59"));
                ps.setBoolean(4, false);
                ps.setBytes(5, new byte[] {0, 1, 2, (byte) 255});
                ps.setNull(6, Types.VARCHAR);
                out("insert prepared", ps.executeUpdate());
                try (ResultSet keys = ps.getGeneratedKeys()) {
                    out("generated key 2", rows(keys));
                }
                for (int i = 0; i < 5; i++) {
                    ps.setString(1, "batch" + i);
                    ps.setBigDecimal(2, BigDecimal.valueOf(i, 1));
                    ps.setTimestamp(3, null);
                    ps.setBoolean(4, i % 2 == 0);
                    ps.setBytes(5, null);
                    ps.setString(6, "n\u00e9" + i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                StringBuilder sb = new StringBuilder();
                for (int n : counts) sb.append(n).append(' ');
                out("batch counts", sb.toString().trim());
            }
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT id, name, amount, made, flag, data, note FROM jprobe WHERE id >= ? ORDER BY id")) {
                ps.setInt(1, 1);
                try (ResultSet rs = ps.executeQuery()) {
                    out("select meta", meta(rs.getMetaData()));
                    out("select rows", rows(rs));
                }
                ps.setInt(1, 6);
                try (ResultSet rs = ps.executeQuery()) {
                    out("select again", rows(rs));
                }
            }
            try (Statement st = c.createStatement()) {
                try (ResultSet rs = st.executeQuery("SELECT COUNT(*), SUM(amount), MIN(made), MAX(name) FROM jprobe")) {
                    out("aggregates", rows(rs));
                }
                st.setMaxRows(2);
                try (ResultSet rs = st.executeQuery("SELECT id FROM jprobe ORDER BY id")) {
                    out("max rows 2", rows(rs));
                }
                st.setMaxRows(0);
                error("duplicate key", st, "INSERT INTO jprobe (id, name) VALUES (1, 'dup')");
                error("no such table", st, "SELECT * FROM jprobe_missing");
                error("syntax", st, "SELEC 1");
                error("null into not null", st, "INSERT INTO jprobe (name) VALUES (NULL)");
            }
            // transactions
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.executeUpdate("INSERT INTO jprobe (name) VALUES ('rolled back')");
                c.rollback();
                st.executeUpdate("INSERT INTO jprobe (name) VALUES ('committed')");
                c.commit();
            }
            c.setAutoCommit(true);
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery("SELECT name FROM jprobe WHERE name LIKE '%commit%' OR name LIKE 'rolled%'")) {
                out("after transactions", rows(rs));
            }
            // a savepoint
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.executeUpdate("UPDATE jprobe SET note = 'kept' WHERE id = 1");
                Savepoint sp = c.setSavepoint("sp1");
                st.executeUpdate("UPDATE jprobe SET note = 'undone' WHERE id = 2");
                c.rollback(sp);
                c.commit();
            }
            c.setAutoCommit(true);
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery("SELECT id, note FROM jprobe WHERE id IN (1, 2) ORDER BY id")) {
                out("after savepoint", rows(rs));
            }
            // a streaming result set (row by row from the server)
            try (Statement st = c.createStatement(ResultSet.TYPE_FORWARD_ONLY, ResultSet.CONCUR_READ_ONLY)) {
                st.setFetchSize(Integer.MIN_VALUE);
                int n = 0;
                long sum = 0;
                try (ResultSet rs = st.executeQuery("SELECT seq FROM seq_1_to_20000")) {
                    while (rs.next()) {
                        n++;
                        sum += rs.getLong(1);
                    }
                }
                out("streamed", n + " rows, sum " + sum);
            }
            // several result sets from one execute
            try (Statement st = c.createStatement()) {
                boolean isRs = st.execute("SELECT 1 AS one; SELECT 'two' AS two; UPDATE jprobe SET flag = flag WHERE id = 1");
                List<String> parts = new ArrayList<>();
                while (true) {
                    if (isRs) {
                        try (ResultSet rs = st.getResultSet()) {
                            parts.add(rows(rs));
                        }
                    } else {
                        int n = st.getUpdateCount();
                        if (n == -1) break;
                        parts.add("update " + n);
                    }
                    isRs = st.getMoreResults();
                }
                out("multi results", String.join(" | ", parts));
            }
            // session state
            try (Statement st = c.createStatement()) {
                st.execute("SET @probe_var = 42");
                try (ResultSet rs = st.executeQuery("SELECT @probe_var, @@session.sql_mode LIKE '%STRICT_TRANS_TABLES%'")) {
                    out("session variable", rows(rs));
                }
                st.execute("SET SESSION sql_mode = 'ANSI_QUOTES'");
                try (ResultSet rs = st.executeQuery("SELECT \"name\" FROM jprobe WHERE id = 1")) {
                    out("ansi quotes", rows(rs));
                }
                st.execute("SET SESSION sql_mode = DEFAULT");
            }
            // metadata the driver asks the server for
            DatabaseMetaData md = c.getMetaData();
            try (ResultSet rs = md.getTables(c.getCatalog(), null, "jprobe", new String[] {"TABLE"})) {
                List<String> t = new ArrayList<>();
                while (rs.next()) t.add(rs.getString("TABLE_NAME") + "/" + rs.getString("TABLE_TYPE"));
                out("getTables", t);
            }
            try (ResultSet rs = md.getColumns(c.getCatalog(), null, "jprobe", "%")) {
                List<String> t = new ArrayList<>();
                while (rs.next()) {
                    t.add(rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME") + " " + rs.getInt("COLUMN_SIZE")
                            + " " + rs.getString("IS_NULLABLE") + " " + rs.getString("IS_AUTOINCREMENT"));
                }
                out("getColumns", t);
            }
            try (ResultSet rs = md.getPrimaryKeys(c.getCatalog(), null, "jprobe")) {
                List<String> t = new ArrayList<>();
                while (rs.next()) t.add(rs.getString("COLUMN_NAME") + "#" + rs.getInt("KEY_SEQ"));
                out("getPrimaryKeys", t);
            }
            // a query timeout (the driver sends SET STATEMENT max_statement_time=... FOR ...)
            try (Statement st = c.createStatement()) {
                st.setQueryTimeout(1);
                try (ResultSet rs = st.executeQuery("SELECT COUNT(*) FROM jprobe")) {
                    out("with timeout", rows(rs));
                }
            }
            try (Statement st = c.createStatement()) {
                st.execute("DROP TABLE jprobe");
            }
            out("valid at end", c.isValid(5));
        }
    }
}
