package dev.conversationtracker.interop;

import io.apicurio.registry.serde.SerdeConfig;
import io.apicurio.registry.serde.avro.AvroKafkaDeserializer;
import io.apicurio.registry.serde.avro.AvroKafkaSerializer;
import java.io.File;
import java.nio.file.Files;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * produce BOOTSTRAP TOPIC REGISTRY MODE SCHEMA.avsc RECORDS.json: one record per line of
 * RECORDS.json (Avro's JSON encoding), keyed by its orderId, written by Apicurio's
 * AvroKafkaSerializer in MODE: "confluent" (byte 0 + 4-byte content id), "apicurio-headers"
 * (the serde's default: the global id in a header), "apicurio-8-byte" (byte 0 + 8-byte id).
 *
 * <p>consume BOOTSTRAP TOPIC REGISTRY COUNT TIMEOUT_S: COUNT records read from the start of
 * TOPIC with Apicurio's AvroKafkaDeserializer in Confluent-compatible mode, each printed as one
 * JSON line.
 *
 * <p>REGISTRY is Apicurio's own API (…/apis/registry/v2), which its serdes speak.
 */
public final class OmsInterop {
  private OmsInterop() {}

  public static void main(String[] args) throws Exception {
    if (args.length == 7 && args[0].equals("produce")) {
      produce(args[1], args[2], args[3], args[4], args[5], new File(args[6]));
    } else if (args.length == 6 && args[0].equals("consume")) {
      consume(args[1], args[2], args[3], Integer.parseInt(args[4]), Integer.parseInt(args[5]));
    } else {
      System.err.println("usage: produce BOOTSTRAP TOPIC REGISTRY MODE SCHEMA RECORDS"
          + " | consume BOOTSTRAP TOPIC REGISTRY COUNT TIMEOUT_S");
      System.exit(2);
    }
  }

  private static Map<String, Object> serde(String registry, String mode) {
    switch (mode) {
      case "confluent":
        return Map.of(SerdeConfig.REGISTRY_URL, registry,
            SerdeConfig.ENABLE_CONFLUENT_ID_HANDLER, true,
            SerdeConfig.USE_ID, "contentId",
            SerdeConfig.ENABLE_HEADERS, false);
      case "apicurio-headers":
        return Map.of(SerdeConfig.REGISTRY_URL, registry, SerdeConfig.ENABLE_HEADERS, true);
      case "apicurio-8-byte":
        return Map.of(SerdeConfig.REGISTRY_URL, registry, SerdeConfig.ENABLE_HEADERS, false);
      default:
        throw new IllegalArgumentException("unknown mode " + mode);
    }
  }

  private static void produce(String bootstrap, String topic, String registry, String mode,
      String schemaFile, File records) throws Exception {
    Schema schema = new Schema.Parser().parse(new File(schemaFile));
    Properties props = new Properties();
    props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
    props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, AvroKafkaSerializer.class.getName());
    props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
    props.putAll(serde(registry, mode));
    props.put(SerdeConfig.AUTO_REGISTER_ARTIFACT, true);
    GenericDatumReader<GenericRecord> reader = new GenericDatumReader<>(schema);
    List<String> lines = Files.readAllLines(records.toPath());
    try (KafkaProducer<String, GenericRecord> producer = new KafkaProducer<>(props)) {
      for (String line : lines) {
        GenericRecord record = reader.read(null, DecoderFactory.get().jsonDecoder(schema, line));
        producer.send(new ProducerRecord<>(topic, record.get("orderId").toString(), record)).get();
      }
    }
    System.out.println("produced " + lines.size() + " " + mode + " records to " + topic);
  }

  private static void consume(String bootstrap, String topic, String registry, int count,
      int timeoutSeconds) {
    Properties props = new Properties();
    props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    props.put(ConsumerConfig.GROUP_ID_CONFIG, "interop-jvm-" + topic);
    props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG,
        AvroKafkaDeserializer.class.getName());
    props.putAll(serde(registry, "confluent"));
    int seen = 0;
    Instant deadline = Instant.now().plusSeconds(timeoutSeconds);
    try (KafkaConsumer<String, GenericRecord> consumer = new KafkaConsumer<>(props)) {
      consumer.subscribe(List.of(topic));
      while (seen < count && Instant.now().isBefore(deadline)) {
        for (ConsumerRecord<String, GenericRecord> record : consumer.poll(Duration.ofMillis(500))) {
          System.out.println(record.value());
          seen++;
        }
      }
    }
    if (seen < count) {
      System.err.println("read " + seen + " of " + count + " records in " + timeoutSeconds + "s");
      System.exit(1);
    }
  }
}
