package dev.conversationtracker.stack.registry;

import java.util.ArrayList;
import java.util.List;

import org.eclipse.microprofile.config.inject.ConfigProperty;
import org.jboss.jandex.AnnotationInstance;
import org.jboss.jandex.AnnotationTarget;
import org.jboss.jandex.AnnotationValue;
import org.jboss.jandex.DotName;
import org.jboss.jandex.FieldInfo;
import org.jboss.jandex.Type;

import apicurio.common.app.components.config.index.DynamicPropertiesInfoRecorder;
import io.apicurio.common.apps.config.Dynamic;
import io.apicurio.common.apps.config.DynamicConfigPropertyDef;
import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import io.quarkus.arc.deployment.SyntheticBeanBuildItem;
import io.quarkus.deployment.annotations.BuildProducer;
import io.quarkus.deployment.annotations.BuildStep;
import io.quarkus.deployment.annotations.ExecutionTime;
import io.quarkus.deployment.annotations.Record;
import io.quarkus.deployment.builditem.CombinedIndexBuildItem;

/**
 * The build step the registry's config-index extension expects from its "deployment" half, which
 * Maven Central does not serve (README.md beside pom.xml). The runtime half asks for one bean: the
 * list of the registry's dynamic settings, i.e. every field annotated both {@code @Dynamic} and
 * {@code @ConfigProperty}, typed {@code Supplier<T>}. This step finds them in the build's Jandex
 * index and hands their definitions to the runtime half's recorder.
 */
final class DynamicPropertiesStep {

    private static final DotName DYNAMIC = DotName.createSimple(Dynamic.class.getName());
    private static final DotName CONFIG_PROPERTY = DotName.createSimple(ConfigProperty.class.getName());

    @BuildStep
    @Record(ExecutionTime.RUNTIME_INIT)
    void dynamicProperties(CombinedIndexBuildItem index, DynamicPropertiesInfoRecorder recorder,
            BuildProducer<SyntheticBeanBuildItem> beans) throws ClassNotFoundException {
        List<DynamicConfigPropertyDef> found = new ArrayList<>();
        for (AnnotationInstance dynamic : index.getIndex().getAnnotations(DYNAMIC)) {
            if (dynamic.target().kind() != AnnotationTarget.Kind.FIELD) {
                continue;
            }
            FieldInfo field = dynamic.target().asField();
            AnnotationInstance property = field.annotation(CONFIG_PROPERTY);
            if (property != null) {
                found.add(definition(field, property, dynamic));
            }
        }
        beans.produce(SyntheticBeanBuildItem.configure(DynamicConfigPropertyList.class)
                .runtimeValue(recorder.initializePropertiesInfo(found))
                .unremovable()
                .setRuntimeInit()
                .done());
    }

    private static DynamicConfigPropertyDef definition(FieldInfo field, AnnotationInstance property,
            AnnotationInstance dynamic) throws ClassNotFoundException {
        String name = property.value("name").asString();
        AnnotationValue fallback = property.value("defaultValue");
        if (fallback == null) {
            throw new IllegalStateException("dynamic setting " + name + " (" + field.declaringClass().name()
                    + "." + field.name() + ") has no default value");
        }
        // The field is a Supplier<T>; the setting's type is T.
        Type valueType = field.type().asParameterizedType().arguments().get(0);
        Class<?> type = Class.forName(valueType.name().toString(), false,
                Thread.currentThread().getContextClassLoader());
        DynamicConfigPropertyDef def = new DynamicConfigPropertyDef(name, type, fallback.asString());
        AnnotationValue label = dynamic.value("label");
        if (label != null) {
            def.setLabel(label.asString());
        }
        AnnotationValue description = dynamic.value("description");
        if (description != null) {
            def.setDescription(description.asString());
        }
        AnnotationValue requires = dynamic.value("requires");
        if (requires != null) {
            def.setRequires(requires.asStringArray());
        }
        return def;
    }
}
