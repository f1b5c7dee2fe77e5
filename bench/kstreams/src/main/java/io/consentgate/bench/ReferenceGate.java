package io.consentgate.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;

/**
 * The gate as a platform team would write it with Kafka Streams: activity.events joined with
 * consent.state as a KTable, SPEC section 3's rules per purpose, passed records to the purpose's
 * sink and one decision per input, under exactly_once_v2.
 *
 * <p>Args: bootstrap, registry URL, application id, activity topic, consent.state topic, decisions
 * topic, catalog JSON ({"purposes": {name: {"terms_version", "categories", "sink"}}}), commit interval ms.
 * Decisions and training records are written as JSON (no registry round trip on output).
 */
public final class ReferenceGate {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final Map<Integer, GenericDatumReader<GenericRecord>> READERS = new ConcurrentHashMap<>();
  private static final HttpClient HTTP = HttpClient.newHttpClient();
  private static String registry;

  record Purpose(String name, int termsVersion, List<String> categories, String sink) {}

  record Outcome(String purpose, boolean passed, String reason, String receipt) {}

  record Result(GenericRecord event, List<Outcome> outcomes, Long version, int partition, long offset) {}

  public static void main(String[] args) throws Exception {
    String bootstrap = args[0];
    registry = args[1];
    String appId = args[2];
    String activityTopic = args[3];
    String consentTopic = args[4];
    String decisionsTopic = args[5];
    JsonNode catalog = JSON.readTree(args[6]);
    String commitMs = args[7];
    List<Purpose> purposes = new ArrayList<>();
    for (Iterator<Map.Entry<String, JsonNode>> it = catalog.get("purposes").fields(); it.hasNext(); ) {
      Map.Entry<String, JsonNode> e = it.next();
      List<String> cats = new ArrayList<>();
      e.getValue().get("categories").forEach(c -> cats.add(c.asText()));
      purposes.add(new Purpose(e.getKey(), e.getValue().get("terms_version").asInt(), cats,
          e.getValue().get("sink").asText()));
    }

    StreamsBuilder builder = new StreamsBuilder();
    KTable<String, byte[]> consent = builder.table(consentTopic, Consumed.with(Serdes.String(), Serdes.ByteArray()),
        Materialized.as("consent"));
    KStream<String, byte[]> activity = builder.stream(activityTopic, Consumed.with(Serdes.String(), Serdes.ByteArray()));
    KStream<String, Result> decided = activity
        .processValues(InputCoordinates::new)
        .leftJoin(consent, (input, state) -> decide(input, state, purposes));
    decided.flatMap((user, r) -> {
      List<KeyValue<String, String>> out = new ArrayList<>();
      out.add(KeyValue.pair(decisionsTopic + "\u0000" + user, decisionJson(r)));
      for (Outcome o : r.outcomes()) {
        if (o.passed()) {
          String sink = purposes.stream().filter(p -> p.name().equals(o.purpose())).findFirst().get().sink();
          out.add(KeyValue.pair(sink + "\u0000" + user, trainingJson(r, o)));
        }
      }
      return out;
    }).to((key, value, ctx) -> key.substring(0, key.indexOf('\u0000')),
        Produced.with(Serdes.String(), Serdes.String()));

    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, commitMs);
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, "1");
    props.put(StreamsConfig.TOPOLOGY_OPTIMIZATION_CONFIG, StreamsConfig.OPTIMIZE);  // the table reads its source topic
    props.put(StreamsConfig.STATE_DIR_CONFIG, System.getProperty("java.io.tmpdir") + "/kstreams-" + appId);
    props.put(StreamsConfig.consumerPrefix(ConsumerConfig.MAX_POLL_RECORDS_CONFIG), "2000");
    props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    props.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), "5");
    props.put(StreamsConfig.producerPrefix(ProducerConfig.BATCH_SIZE_CONFIG), "262144");
    KafkaStreams streams = new KafkaStreams(builder.build(props), props);
    CountDownLatch done = new CountDownLatch(1);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      streams.close();
      done.countDown();
    }));
    streams.setStateListener((now, before) -> {
      if (now == KafkaStreams.State.RUNNING) {
        System.out.println("RUNNING");
        System.out.flush();
      }
    });
    streams.start();
    done.await();
  }

  /** The activity value with the input coordinates a decision records. */
  static final class InputCoordinates
      implements org.apache.kafka.streams.processor.api.FixedKeyProcessor<String, byte[], Input> {
    private org.apache.kafka.streams.processor.api.FixedKeyProcessorContext<String, Input> ctx;

    @Override
    public void init(org.apache.kafka.streams.processor.api.FixedKeyProcessorContext<String, Input> context) {
      ctx = context;
    }

    @Override
    public void process(org.apache.kafka.streams.processor.api.FixedKeyRecord<String, byte[]> rec) {
      var meta = ctx.recordMetadata().orElseThrow();
      ctx.forward(rec.withValue(new Input(rec.value(), meta.partition(), meta.offset())));
    }
  }

  record Input(byte[] value, int partition, long offset) {}

  static Result decide(Input input, byte[] state, List<Purpose> purposes) {
    GenericRecord event = decode(input.value());
    String category = event.get("category").toString();
    long occurred = (Long) event.get("occurred_at");
    long now = System.currentTimeMillis();
    GenericRecord consent = state == null ? null : decode(state);
    Long version = consent == null ? null : (Long) consent.get("version");
    List<Outcome> outcomes = new ArrayList<>();
    boolean known = false;
    for (Purpose p : purposes) {
      if (p.categories().contains(category)) {
        known = true;
      }
    }
    for (Purpose p : purposes) {
      if (!known) {
        outcomes.add(new Outcome(p.name(), false, "unknown_category", null));
        continue;
      }
      if (!p.categories().contains(category)) {
        continue;
      }
      if (consent == null) {  // a KTable cannot tell an erased user (tombstone) from an unknown one
        outcomes.add(new Outcome(p.name(), false, "no_consent_record", null));
        continue;
      }
      GenericRecord grant = null;
      for (Object g : (List<?>) consent.get("grants")) {
        GenericRecord gr = (GenericRecord) g;
        if (gr.get("category").toString().equals(category) && gr.get("purpose").toString().equals(p.name())) {
          grant = gr;
        }
      }
      if (grant == null) {
        outcomes.add(new Outcome(p.name(), false, "no_grant", null));
      } else if ((Long) grant.get("granted_at") > occurred) {
        outcomes.add(new Outcome(p.name(), false, "grant_after_event", null));
      } else if (grant.get("expires_at") != null
          && ((Long) grant.get("expires_at") <= occurred || (Long) grant.get("expires_at") <= now)) {
        outcomes.add(new Outcome(p.name(), false, "expired", null));
      } else if (((Number) grant.get("terms_version")).intValue() < p.termsVersion()) {
        outcomes.add(new Outcome(p.name(), false, "stale_terms", null));
      } else {
        outcomes.add(new Outcome(p.name(), true, null, grant.get("receipt_id").toString()));
      }
    }
    return new Result(event, outcomes, version, input.partition(), input.offset());
  }

  static GenericRecord decode(byte[] framed) {
    ByteBuffer buf = ByteBuffer.wrap(framed);
    if (buf.get() != 0) {
      throw new IllegalArgumentException("not Confluent-framed");
    }
    int id = buf.getInt();
    GenericDatumReader<GenericRecord> reader =
        READERS.computeIfAbsent(id, i -> new GenericDatumReader<>(fetchSchema(i)));
    BinaryDecoder decoder = DecoderFactory.get().binaryDecoder(framed, 5, framed.length - 5, null);
    try {
      return reader.read(null, decoder);
    } catch (java.io.IOException e) {
      throw new IllegalArgumentException(e);
    }
  }

  static Schema fetchSchema(int id) {
    try {
      HttpResponse<String> r = HTTP.send(HttpRequest.newBuilder(URI.create(registry + "/schemas/ids/" + id)).build(),
          HttpResponse.BodyHandlers.ofString());
      return new Schema.Parser().parse(JSON.readTree(r.body()).get("schema").asText());
    } catch (Exception e) {
      throw new IllegalStateException("schema " + id + ": " + e, e);
    }
  }

  static String decisionJson(Result r) {
    ObjectNode d = JSON.createObjectNode();
    d.put("event_id", r.event().get("event_id").toString());
    d.put("user_id", r.event().get("user_id").toString());
    d.put("category", r.event().get("category").toString());
    d.put("decided_at", System.currentTimeMillis());
    ArrayNode outs = d.putArray("outcomes");
    for (Outcome o : r.outcomes()) {
      ObjectNode n = outs.addObject();
      n.put("purpose", o.purpose());
      n.put("passed", o.passed());
      n.put("reason", o.reason());
    }
    if (r.version() == null) {
      d.putNull("consent_version");
    } else {
      d.put("consent_version", r.version());
    }
    ObjectNode in = d.putObject("input");
    in.put("partition", r.partition());
    in.put("offset", r.offset());
    return d.toString();
  }

  static String trainingJson(Result r, Outcome o) {
    ObjectNode t = JSON.createObjectNode();
    t.put("event_id", r.event().get("event_id").toString());
    t.put("purpose", o.purpose());
    t.put("category", r.event().get("category").toString());
    t.put("occurred_at", (Long) r.event().get("occurred_at"));
    t.put("payload", String.valueOf(r.event().get("payload")));
    t.put("receipt_id", o.receipt());
    t.put("consent_version", r.version());
    return new String(t.toString().getBytes(StandardCharsets.UTF_8), StandardCharsets.UTF_8);
  }
}
